#!/usr/bin/env bash
# Instructions per relayed message and per handshake for the release wsgate, counted by
# valgrind's callgrind: instruction counts barely move with what else the machine is doing, so
# a change's cost shows in one run. Each figure is (run with K more operations - baseline run)
# / K, so start-up, the first connection's one-time set-up and shutdown cancel out.
#
#   crates/wsgate-bench/callgrind.sh                          # ~1 minute
#   crates/wsgate-bench/callgrind.sh --messages 5000 --handshakes 200 --out FILE
#
# Runs (each a fresh wsgate under callgrind, driven by wsgate-bench over loopback):
#   connection  one session that sends nothing                      (the baseline)
#   echo-64     one session, MESSAGES round trips of 64 B
#   echo-16k    one session, MESSAGES/4 round trips of 16 KiB
#   handshake   1 + HANDSHAKES sequential TLS 1.3 + token + upgrade + close
# wsgate runs pinned to one CPU (taskset), so its runtime has one worker thread and the counts
# do not depend on how work was spread over threads. aws-lc seeds its random generator once
# per process with CPU jitter entropy, whose instruction count varies with timing; that
# function's inclusive cost is subtracted from every total.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MESSAGES=2000
HANDSHAKES=100
BUILD=1
OUT=

while (($#)); do
    case $1 in
    --messages) MESSAGES=$2 && shift ;;
    --handshakes) HANDSHAKES=$2 && shift ;;
    --out) OUT=$2 && shift ;;
    --no-build) BUILD=0 ;;
    -h | --help) sed -n '2,16p' "$0" && exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done

WORK=$ROOT/target/bench-callgrind
trap 'stop_all' EXIT
trap 'exit 130' INT TERM

command -v valgrind >/dev/null || die "valgrind is not installed (apt-get install valgrind)"
command -v curl >/dev/null || die "curl is not installed (apt-get install curl)"

# Runs wsgate under callgrind, then the client command (if any), then stops wsgate; sets TOTAL
# to the instruction count (not printed: a command substitution would run this in a subshell,
# out of reach of the EXIT trap that stops what it started).
counted() {
    local name=$1
    shift
    local out=$WORK/$name.callgrind pid i
    start "callgrind-$name" taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$out" \
        "$WSGATE" run --config "$WORK/wsgate.yaml"
    pid=$STARTED
    wait_ready "$pid" 120 || die "wsgate under valgrind did not become ready (see $WORK/logs/callgrind-$name.log)"
    if (($#)); then
        "$BENCH" "$@" --url "wss://127.0.0.1:$WSGATE_PORT/echo" --ca "$WORK/pki/ca.crt" \
            --origin "$ORIGIN" --token-key "$WORK/keys/jwt-private.pem" --issuer "$ISSUER" \
            --audience "$AUDIENCE" --kid "$KID" --label "callgrind $name" \
            >>"$WORK/records.jsonl" 2>>"$WORK/logs/client-$name.log" ||
            die "the client failed (see $WORK/logs/client-$name.log)"
    fi
    kill -TERM "$pid"
    # Valgrind writes its profile on exit; give it time.
    for i in $(seq 600); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    stop "$pid"
    local total jitter
    total=$(awk '/^(totals|summary):/ { print $2; exit }' "$out")
    [[ -n $total ]] || die "no instruction total in $out"
    jitter=$(callgrind_annotate --inclusive=yes "$out" 2>/dev/null |
        awk '/tree_jitter_initialize_once/ { gsub(",", "", $1); print $1; exit }')
    TOTAL=$((total - ${jitter:-0}))
    log "$name: $TOTAL instructions (total $total, jitter-entropy seeding ${jitter:-0})"
}

per() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { printf "%.0f", (a - b) / n }'; }

main() {
    if ((BUILD)); then
        log "building (release)"
        (cd "$ROOT" && cargo build --release --quiet -p wsgate -p wsgate-bench)
    fi
    check_ports "$BACKEND_PORT" "$JWKS_PORT" "$WSGATE_PORT" "$ADMIN_PORT"
    rm -rf "$WORK"
    mkdir -p "$WORK/logs"
    setup_common
    choose_wsgate_config

    local small=$MESSAGES large=$((MESSAGES / 4))
    local connection echo64 echo16k handshake
    counted connection echo --conns 1 --size 64 --count 0 && connection=$TOTAL
    counted echo-64 echo --conns 1 --size 64 --count "$small" && echo64=$TOTAL
    counted echo-16k echo --conns 1 --size 16384 --count "$large" && echo16k=$TOTAL
    counted handshake handshake --parallel 1 --count $((HANDSHAKES + 1)) && handshake=$TOTAL

    local rt64 rt16k hs
    rt64=$(per "$echo64" "$connection" "$small")
    rt16k=$(per "$echo16k" "$connection" "$large")
    hs=$(per "$handshake" "$connection" "$HANDSHAKES")
    local TOKEN_TEXT="fresh RS256 token verified"
    [[ $WSGATE_LEVEL == basic ]] && TOKEN_TEXT="token sent but not verified (no JWT yet)"
    local report
    report=$(
        cat <<EOF
## Instructions under callgrind ($WSGATE_LABEL, $WSGATE_LEVEL configuration)

| what | count | instructions each | per relayed message |
|---|---:|---:|---:|
| round trip, 64 B (client -> backend -> client) | $small | $rt64 | $((rt64 / 2)) |
| round trip, 16 KiB | $large | $rt16k | $((rt16k / 2)) |
| new connection: TLS 1.3 + upgrade + close, $TOKEN_TEXT | $HANDSHAKES | $hs | |

Totals (jitter-entropy seeding excluded): one silent connection $connection, echo-64 $echo64,
echo-16k $echo16k, 1 + $HANDSHAKES handshakes $handshake. wsgate pinned to one CPU; $(valgrind --version);
commit $(git -C "$ROOT" rev-parse --short HEAD).
Command: \`crates/wsgate-bench/callgrind.sh --messages $MESSAGES --handshakes $HANDSHAKES\`
EOF
    )
    echo "$report"
    echo "$report" >"$WORK/callgrind.md"
    [[ -z $OUT ]] || echo "$report" >"$OUT"
    log "profiles in $WORK (callgrind_annotate $WORK/echo-64.callgrind)"
}

main
