#!/usr/bin/env bash
# Checks of the deployment files (what deploy/check.py verifies is listed at its top).
# Installs what it needs on a fresh Debian machine: promtool and prometheus (from Debian's
# prometheus package, unpacked under target/deploy-tools rather than installed, so that no
# Prometheus service is started on the machine), PyYAML, and the wsgate debug binary.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${CARGO_TARGET_DIR:-target}
tools=$target/deploy-tools
bin=$target/debug/wsgate
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
trap 'exit 130' INT TERM

die() { echo "deploy/check.sh: $*" >&2; exit 1; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

# promtool and prometheus: from PATH, else from Debian's package, unpacked once.
if command -v promtool >/dev/null && command -v prometheus >/dev/null; then
  promtool=$(command -v promtool) prometheus=$(command -v prometheus)
else
  promtool=$tools/usr/bin/promtool prometheus=$tools/usr/bin/prometheus
  if [ ! -x "$promtool" ] || [ ! -x "$prometheus" ]; then
    command -v apt-get >/dev/null || die "promtool is missing and apt-get is not available"
    echo "== fetching Debian's prometheus package for promtool and prometheus"
    as_root timeout 300 apt-get update -qq || die "apt-get update failed"
    download=$(mktemp -d)
    (cd "$download" && timeout 300 apt-get download -q prometheus) || die "apt-get download prometheus failed"
    mkdir -p "$tools"
    dpkg-deb -x "$download"/prometheus_*.deb "$tools" || die "cannot unpack the prometheus package"
    rm -rf "$download"
  fi
fi
"$promtool" --version 2>&1 | head -1

# PyYAML for the manifests.
if ! python3 -c 'import yaml' 2>/dev/null; then
  echo "== installing PyYAML"
  timeout 300 python3 -m pip install --quiet pyyaml || die "pip install pyyaml failed"
fi

# The wsgate binary: the debug build of the test command, rebuilt only when a source is newer.
if [ ! -x "$bin" ] || [ -n "$(find Cargo.lock Cargo.toml crates -newer "$bin" \( -name '*.rs' -o -name 'Cargo.*' \) -print -quit)" ]; then
  echo "== cargo build --locked -p wsgate (debug)"
  timeout 1200 cargo build --locked -p wsgate || die "cargo build failed"
fi

timeout 600 python3 deploy/check.py --wsgate "$bin" --promtool "$promtool" --prometheus "$prometheus" &
pids+=("$!")
wait "$!" || die "failed (see above)"
