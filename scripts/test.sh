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
