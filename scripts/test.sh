#!/usr/bin/env bash
# The whole test suite: formatting, lints, then every test of the workspace.
# Device modules (wasm32) are built by the tests themselves when they need them
# (edgefleet-device-modules builds them into target/device-modules).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
echo "== fuzz smoke"
# A few seconds per fuzz target (scripts/fuzz.sh, its own workspace under fuzz/): every target
# builds, starts from its seeds and survives a short run.
scripts/fuzz.sh 5
