#!/usr/bin/env bash
# Runs the sandbox benchmark (with the wasmtime anchor, in one run) and the end-to-end agent
# benchmark, and prints the README's tables.
# The anchor is a separate crate (not a workspace member) so wasmtime never enters the test build,
# and a separate process because WasmEdge AOT resets the process's fault handlers.
# EDGEFLEET_BENCH_SECONDS=N measures N seconds per row (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

echo "== building the wasmtime anchor (sandbox-worker/benches/wasmtime-anchor)" >&2
cargo build --release --locked --manifest-path sandbox-worker/benches/wasmtime-anchor/Cargo.toml >&2
export WASMTIME_ANCHOR="$PWD/sandbox-worker/benches/wasmtime-anchor/target/release/wasmtime-anchor"
echo "== running the sandbox benchmark" >&2
cargo bench --locked -p edgefleet-sandbox-worker --bench sandbox
echo "== running the end-to-end agent benchmark" >&2
# The agent starts the worker binary found beside it (target/release): build it in the same profile.
cargo build --release --locked -p edgefleet-sandbox-worker >&2
cargo bench --locked -p edge-agent --bench agent
