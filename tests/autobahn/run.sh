#!/usr/bin/env bash
# The Autobahn conformance run: kosoku's fuzzing client, through socat (plain ws -> WSS), against
# `wsgate run` in front of `wsgate echo`; categories 1-7, 9 and 10 (12 and 13 are compression,
# which wsgate declines). What is started and checked is described at the top of run.py.
#
#   tests/autobahn/run.sh [--bin PATH] [--release] [-- run.py options, e.g. --cases 9.*]
#
# Installs what it needs on a fresh Debian machine: socat (apt-get, only when missing) and
# kosoku (pinned, in a venv under the cargo target dir). Without --bin it builds wsgate: the
# debug build by default (the one the test command and deploy/check.sh already build, so CI
# compiles nothing more), or the release build with --release. Work files, logs and the report
# (index.html, one JSON per case) go to $CARGO_TARGET_DIR/autobahn.
set -euo pipefail
caller=$PWD
cd "$(dirname "$0")/../.."

KOSOKU_VERSION=0.1.0
target=${CARGO_TARGET_DIR:-target}
work=$target/autobahn
venv=$work/venv
bin= profile=debug
while [ $# -gt 0 ]; do
  case $1 in
    --bin) bin=${2:?--bin needs a path}; [[ $bin = /* ]] || bin=$caller/$bin; shift 2 ;;
    --release) profile=release; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) break ;;
  esac
done

die() { echo "tests/autobahn/run.sh: $*" >&2; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

pid=
cleanup() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi; }
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! command -v socat >/dev/null; then
  command -v apt-get >/dev/null || die "socat is missing and apt-get is not available"
  echo "== installing socat"
  as_root timeout 300 apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive as_root timeout 300 apt-get install -y -qq socat >/dev/null \
    || die "apt-get install socat failed"
fi

if ! "$venv/bin/kosoku" -h >/dev/null 2>&1 \
  || [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("kosoku"))')" != "$KOSOKU_VERSION" ]; then
  echo "== installing kosoku $KOSOKU_VERSION in $venv"
  rm -rf "$venv"
  if ! python3 -m venv "$venv"; then
    # Debian's own python3 keeps ensurepip in a separate package.
    echo "== installing python3-venv"
    as_root timeout 300 apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive as_root timeout 300 apt-get install -y -qq python3-venv >/dev/null \
      || die "apt-get install python3-venv failed"
    rm -rf "$venv"; python3 -m venv "$venv" || die "python3 -m venv failed"
  fi
  timeout 300 "$venv/bin/pip" install --quiet --disable-pip-version-check "kosoku==$KOSOKU_VERSION" \
    || die "pip install kosoku==$KOSOKU_VERSION failed"
fi

if [ -z "$bin" ]; then
  bin=$target/$profile/wsgate
  flag=; [ "$profile" = release ] && flag=--release
  echo "== cargo build --locked -p wsgate $flag"
  timeout 2400 cargo build --locked -p wsgate $flag || die "cargo build failed"
fi
[ -x "$bin" ] || die "no wsgate binary at $bin"

# In the background so that the trap can stop it (and its children, through run.py's own clean-up).
timeout 3000 "$venv/bin/python" tests/autobahn/run.py --bin "$bin" --kosoku "$venv/bin/kosoku" \
  --work "$work" "$@" &
pid=$!
status=0; wait "$pid" || status=$?
pid=
exit "$status"
