#!/usr/bin/env bash
# wsgate (alone, and as wsgate-fleet with a cluster on a local redis-server) against direct
# ws://, HAProxy (+ JWT verification) and nginx, on this machine, in one run: the same
# certificate, the same echo backend, the same client. Every target first passes (or is marked
# as failing) the 11 upgrade checks; then each scenario runs for every target, RUNS times,
# interleaved; BENCHMARKS.md gets the medians and ratios.
#
#   crates/wsgate-bench/compare.sh            # full comparison (~15 minutes on 2 cores)
#   crates/wsgate-bench/compare.sh --quick    # ~2 minutes, for trying the harness
#
# Options: --runs N, --duration 5s, --warmup 2s, --idle 5000,9000, --settle 2s,
# --targets direct,wsgate,wsgate-fleet,haproxy,nginx, --out FILE, --no-build.
# Installs haproxy, nginx and redis-server from Debian when missing (needs root). Loopback only.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS=3
DURATION=5s
WARMUP=2s
IDLE=5000,9000
SETTLE=2s
TARGETS=direct,wsgate,wsgate-fleet,haproxy,nginx
OUT=$ROOT/BENCHMARKS.md
BUILD=1
ARGS="$*"

while (($#)); do
    case $1 in
    --quick) RUNS=1 DURATION=1s WARMUP=0.5s IDLE=1000,2000 SETTLE=1s ;;
    --runs) RUNS=$2 && shift ;;
    --duration) DURATION=$2 && shift ;;
    --warmup) WARMUP=$2 && shift ;;
    --idle) IDLE=$2 && shift ;;
    --settle) SETTLE=$2 && shift ;;
    --targets) TARGETS=$2 && shift ;;
    --out) OUT=$2 && shift ;;
    --no-build) BUILD=0 ;;
    -h | --help) sed -n '2,13p' "$0" && exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done

WORK_REL=target/bench-compare
WORK=$ROOT/$WORK_REL
RESULTS=$WORK/results.jsonl
CHECKS=$WORK/checks.jsonl
COMMANDS=$WORK/commands.txt
trap 'stop_all' EXIT
trap 'exit 130' INT TERM

# 9,000 idle sessions need ~18,000 descriptors in a proxy; children inherit this.
ulimit -n "$(ulimit -Hn | awk '{ print ($1 == "unlimited" || $1 > 20000) ? 20000 : $1 }')"

install_peers() {
    local missing=()
    command -v haproxy >/dev/null || missing+=(haproxy)
    command -v nginx >/dev/null || missing+=(nginx)
    command -v curl >/dev/null || missing+=(curl)
    if fleet_wanted; then
        command -v redis-server >/dev/null || missing+=(redis-server)
    fi
    ((${#missing[@]})) || return 0
    log "installing ${missing[*]} from Debian"
    [[ $(id -u) == 0 ]] || die "installing ${missing[*]} needs root"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

fleet_wanted() { [[ ,$TARGETS, == *,wsgate-fleet,* ]]; }

# Runs the bench binary, appends its JSON to FILE, and records the command of the first run.
bench() {
    local file=$1
    shift
    if [[ $RUN == 1 ]]; then
        printf '%q ' "$BENCH" "$@" >>"$COMMANDS"
        echo >>"$COMMANDS"
    fi
    "$BENCH" "$@" >>"$file" || log "failed (skipped): wsgate-bench $1 for $LABEL"
}

# Starts TARGET; sets URL, LABEL and PID_ARGS (empty for direct: there is no proxy).
start_target() {
    local target=$1
    PID_ARGS=()
    URL=wss://127.0.0.1
    case $target in
    direct)
        URL=ws://127.0.0.1:$BACKEND_PORT/echo
        LABEL=direct
        return 0
        ;;
    wsgate)
        start wsgate "$WSGATE" run --config "$WORK/wsgate.yaml"
        wait_ready "$STARTED" || die "wsgate did not become ready (see $WORK/logs/wsgate.log)"
        URL=$URL:$WSGATE_PORT/echo
        LABEL=$WSGATE_LABEL
        ;;
    wsgate-fleet)
        # The same wsgate with a cluster block: Redis (started once by main) is the fleet's.
        start wsgate-fleet "$WSGATE" run --config "$WORK/wsgate-fleet.yaml"
        wait_ready "$STARTED" || die "wsgate-fleet did not become ready (see $WORK/logs/wsgate-fleet.log)"
        URL=$URL:$WSGATE_PORT/echo
        LABEL=wsgate-fleet
        ;;
    haproxy)
        start haproxy haproxy -db -f "$WORK/haproxy.cfg"
        wait_port "$HAPROXY_PORT" "$STARTED" || die "haproxy did not start (see $WORK/logs/haproxy.log)"
        URL=$URL:$HAPROXY_PORT/echo
        LABEL=haproxy
        ;;
    nginx)
        start nginx nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx/" -g 'daemon off;'
        wait_port "$NGINX_PORT" "$STARTED" || die "nginx did not start (see $WORK/logs/nginx.log)"
        URL=$URL:$NGINX_PORT/echo
        LABEL=nginx
        ;;
    *) die "unknown target $target" ;;
    esac
    PID=$STARTED
    PID_ARGS=(--pid "$PID")
}

stop_target() {
    [[ -n ${PID:-} ]] && stop "$PID"
    PID=
}

# Every scenario against the running target.
measure() {
    local target=$1
    local client=(--url "$URL" --ca "$WORK/pki/ca.crt" --origin "$ORIGIN"
        --token-key "$WORK/keys/jwt-private.pem" --issuer "$ISSUER" --audience "$AUDIENCE"
        --kid "$KID" --label "$LABEL" --run "$RUN" "${PID_ARGS[@]}")
    local plan=(--duration "$DURATION" --warmup "$WARMUP")
    if [[ $target != direct ]]; then
        bench "$CHECKS" check "${client[@]}" --token-public "$WORK/keys/jwt-public.pem"
        # First, on the freshly started process.
        bench "$RESULTS" idle "${client[@]}" --sessions "$IDLE" --settle "$SETTLE"
        sleep 2 # let the proxy tear down the dropped sessions
    fi
    local size conns
    for size in 64 16384; do
        for conns in 1 64 512; do
            bench "$RESULTS" echo "${client[@]}" "${plan[@]}" --conns "$conns" --size "$size"
        done
    done
    bench "$RESULTS" handshake "${client[@]}" "${plan[@]}" --parallel 32
    if [[ $target == wsgate && ${WSGATE_RULES:-0} == 1 ]]; then
        # Message rules (issue 16): 1 KiB JSON chat messages on the same route without rules,
        # then on /echo-json (text: json + examples/schemas/chat.json).
        bench "$RESULTS" echo "${client[@]}" "${plan[@]}" --conns 64 --size 1024 --json
        local rules=() arg previous=
        for arg in "${client[@]}"; do
            case $previous in
            --url) arg=${URL%/echo}/echo-json ;;
            --label) arg="message rules ($LABEL)" ;;
            esac
            rules+=("$arg")
            previous=$arg
        done
        bench "$RESULTS" echo "${rules[@]}" "${plan[@]}" --conns 64 --size 1024 --json
    fi
}

machine() {
    echo "- CPU: $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "- memory: $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo); kernel $(uname -r)"
    echo "- load average when the run started: $LOAD"
    echo "- $(haproxy -v 2>&1 | head -1)"
    echo "- $(nginx -v 2>&1 | head -1)"
    if fleet_wanted; then
        echo "- $(redis-server --version 2>&1 | head -1) (wsgate-fleet's Redis, no persistence)"
    fi
    echo "- $(rustc --version 2>/dev/null || echo 'rustc: not found'); $("$WSGATE" --version)"
    echo "- OpenSSL (HAProxy, nginx): $(openssl version 2>/dev/null || echo unknown); wsgate and the client: rustls with aws-lc-rs"
    echo "- commit: $COMMIT"
}

write_report() {
    {
        echo "# Benchmarks: wsgate, HAProxy, nginx and direct"
        echo
        echo "Generated by \`crates/wsgate-bench/compare.sh${ARGS:+ $ARGS}\` on $(date -u '+%Y-%m-%d %H:%M UTC')."
        echo "Runs: $RUNS (targets interleaved in each run); window $DURATION after a $WARMUP warm-up; idle steps $IDLE sessions."
        echo "Proxy CPU per operation is the figure to compare on a shared machine; rates and latencies move with whatever else runs."
        echo
        echo "## Machine and versions"
        echo
        machine
        echo
        echo "## Targets"
        echo
        echo "All serve the same ECDSA P-256 certificate, relay to the same ws:// echo backend"
        echo "(\`wsgate-bench backend\`), and are driven by the same client (\`wsgate-bench\`, one thread,"
        echo "TLS 1.3 with X25519, no session resumption, a fresh RS256 token and an Origin header on every"
        echo "upgrade). Proxy CPU is utime+stime of the proxy's whole process tree during the window."
        echo
        local target
        for target in ${TARGETS//,/ }; do
            case $target in
            direct) echo "- **direct**: the client straight to the backend over ws:// (no TLS, no proxy): the upper bound." ;;
            wsgate) echo "- **$WSGATE_LABEL**: \`wsgate run\` with \`$WSGATE_LEVEL\` configuration ($(wsgate_level_text)). Its defaults include \`listen.busy_poll: 50us\`: with fewer sessions than worker threads (the x 1 scenarios) a session polls that long after moving data before its thread sleeps, which the x 1 rows' proxy CPU includes (HAProxy's \`busy-polling\` is off here, its default; nginx has no such setting)." ;;
            wsgate-fleet) echo "- **wsgate-fleet**: the same \`wsgate run\` configuration plus a \`cluster\` block (\`redis: redis://127.0.0.1:$REDIS_PORT/0\`, \`instance: bench\`) on a local \`redis-server\` without persistence (issue 15): per-subject caps and per-IP handshake rates are counted in Redis, one Lua script call per handshake; the relay does not touch Redis. The \`wsgate-fleet ÷ wsgate\` column is the cost of the cluster." ;;
            haproxy) echo "- **haproxy**: TLS termination, Origin check, \`jwt_verify\` RS256 against the bare public key, \`iss\`, \`aud\` and \`exp\` checks, 401/403 otherwise; the token is removed before the backend." ;;
            nginx) echo "- **nginx**: TLS termination; checks only that the Origin is allowed and that an \`Authorization: Bearer\` header is present (nginx cannot verify a JWT: it fails the signature checks by design)." ;;
            esac
        done
        echo
        "$BENCH" report --results "$RESULTS" --checks "$CHECKS"
        echo
        echo "## Commands"
        echo
        echo "Everything was generated and started by the script in \`$WORK_REL\`:"
        echo
        echo '```'
        echo "wsgate-bench keys --out-dir keys --kid $KID; wsgate-bench certs --out-dir pki"
        echo "wsgate-bench backend --listen 127.0.0.1:$BACKEND_PORT"
        echo "wsgate-bench jwks-serve --file keys/jwks.json --listen 127.0.0.1:$JWKS_PORT"
        echo "wsgate run --config wsgate.yaml"
        fleet_wanted && echo "redis-server --port $REDIS_PORT --save '' --appendonly no --daemonize no; wsgate run --config wsgate-fleet.yaml"
        echo "haproxy -db -f haproxy.cfg"
        echo "nginx -c nginx/nginx.conf -p nginx/ -g 'daemon off;'"
        echo '```'
        echo
        local file
        local files=(wsgate.yaml)
        fleet_wanted && files+=(wsgate-fleet.yaml)
        for file in "${files[@]}" haproxy.cfg nginx/nginx.conf; do
            echo "<details><summary>$file</summary>"
            echo
            echo '```'
            sed "s#$WORK/##g" "$WORK/$file"
            echo '```'
            echo "</details>"
            echo
        done
        echo "<details><summary>client commands of run 1 (later runs differ only in --run and --pid)</summary>"
        echo
        echo '```'
        sed -e "s#$WORK/##g" -e "s#$ROOT/##g" "$COMMANDS"
        echo '```'
        echo "</details>"
    } >"$OUT"
}

wsgate_level_text() {
    case $WSGATE_LEVEL in
    full) echo "JWT against the JWKS served by \`wsgate-bench jwks-serve\`, Origin allowlist, rate limits raised out of the way" ;;
    auth) echo "JWT against the JWKS served by \`wsgate-bench jwks-serve\`, Origin allowlist; this wsgate has no rate limits yet" ;;
    basic) echo "TLS termination and relay only: this wsgate refuses \`providers\`, \`auth\` and \`origins\` as not supported yet, so it does not do the same job yet" ;;
    esac
}

main() {
    LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
    # What is built and measured (taken now: the report itself is a tracked file, rewritten at
    # the end).
    COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
    install_peers
    if ((BUILD)); then
        log "building (release)"
        (cd "$ROOT" && cargo build --release --quiet -p wsgate -p wsgate-bench)
    fi
    check_ports "$BACKEND_PORT" "$JWKS_PORT" "$WSGATE_PORT" "$ADMIN_PORT" "$HAPROXY_PORT" "$NGINX_PORT"
    fleet_wanted && check_ports "$REDIS_PORT"
    rm -rf "$WORK"
    mkdir -p "$WORK/logs" "$WORK/nginx"
    : >"$RESULTS"
    : >"$CHECKS"
    : >"$COMMANDS"
    setup_common
    choose_wsgate_config
    haproxy_config >"$WORK/haproxy.cfg"
    nginx_config >"$WORK/nginx/nginx.conf"
    haproxy -c -q -f "$WORK/haproxy.cfg" || die "haproxy refused its configuration"
    nginx -t -q -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx/" || die "nginx refused its configuration"
    if fleet_wanted; then
        wsgate_fleet_config >"$WORK/wsgate-fleet.yaml"
        "$WSGATE" check --config "$WORK/wsgate-fleet.yaml" >"$WORK/logs/wsgate-check-fleet.log" 2>&1 ||
            die "wsgate refused the cluster configuration (see $WORK/logs/wsgate-check-fleet.log)"
        # One Redis for the whole run (stopped with the other helpers at exit).
        start redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize no
        wait_port "$REDIS_PORT" "$STARTED" || die "redis-server did not start (see $WORK/logs/redis.log)"
    fi

    local target
    for RUN in $(seq "$RUNS"); do
        for target in ${TARGETS//,/ }; do
            log "run $RUN/$RUNS: $target"
            start_target "$target"
            measure "$target"
            stop_target
        done
    done
    write_report
    log "wrote $OUT (raw results in $WORK)"
}

main
