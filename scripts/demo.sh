#!/usr/bin/env bash
# The README's main command: the local fleet on this machine — a PKI, the shipped brokers with
# mutual TLS and ACLs, the controller in standalone mode, three real edge agents with their WasmEdge
# sandboxes, a thousand simulated devices with the correctness oracle, and a staged rollout of
# thermostat 1.1.0 — then the oracle's verdict. Run scripts/setup.sh first.
#
# Builds the four binaries it runs (release), then runs `edgefleet demo` with the arguments given
# (`scripts/demo.sh --help` lists them: --devices, --rate, --dir, --keep, --stay, --listen, …).
# Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  echo "demo: mosquitto is not installed; run scripts/setup.sh first" >&2
  exit 2
fi
echo "== building edgefleet, edgefleet-controller, edge-agent, edgefleet-sandbox-worker (release)" >&2
cargo build --release --locked -q \
  -p edgefleet-cli -p edgefleet-controller -p edge-agent -p edgefleet-sandbox-worker
# Not through the cargo runner (scripts/wasmedge-run): only the sandbox workers need WasmEdge's
# loader, and the demo hands it to the agents that start them.
exec target/release/edgefleet demo "$@"
