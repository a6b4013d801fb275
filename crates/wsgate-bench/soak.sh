#!/usr/bin/env bash
# Soak and faults (issue 7): the release wsgate with a JWKS provider, driven by wsgate-bench,
# through five bounded phases; prints a figures table (proxy RSS, open descriptors, threads,
# wsgate_connections_active, /admin/sessions) and PASS/FAIL per phase with its numbers.
#
#   crates/wsgate-bench/soak.sh            # full run (~3 minutes on 2 cores; bounded)
#   crates/wsgate-bench/soak.sh --quick    # smaller counts (~2 minutes)
#
# 1 cycles   N connect + TLS + upgrade (fresh token) + close, 32 in parallel, in two rounds:
#            fds, threads, connections_active and sessions back to the baseline; RSS does not
#            grow in the second round (a leak grows with every round, allocator reuse does not)
# 2 idle     N concurrent idle sessions (as many as the descriptor hard limit allows, up to
#            10,000), held, closed; the same checks, two rounds
# 3 jwks     the JWKS server flaps (killed and restarted; while up it serves, answers 503 and
#            hangs up in turns) during a handshake load: no valid client refused (max_stale 1h)
# 4 backend  the echo backend is killed and restarted on its port during echo load: every
#            session gets 1014, every loop reconnects, no stuck session, same proxy pid
# 5 ulimit   a second wsgate under `ulimit -n 256`: descriptors exhausted with held sessions
#            and raw TCP connections; the accept loop logs and backs off without spinning
#            (CPU and log lines over a window), then a valid client gets through again
#
# Options: --quick, --no-build, --cycles N, --idle N, --only 1,2,3,4,5. Exits 1 on any FAIL.
# Ports: BENCH_PORT_BASE (default 19600) + 1 backend, 2 JWKS, 43/44 wsgate, 90/91 admin.
# Loopback only. Work files and logs: target/bench-soak/.
set -euo pipefail
BENCH_PORT_BASE=${BENCH_PORT_BASE:-19600}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CYCLES=10000
IDLE=10000
JWKS_SECONDS=30
FLAP=3
BOUNCE_SECONDS=20
BOUNCE_CONNS=64
ONLY=1,2,3,4,5
TOKEN_TTL=3600
# Token lifetimes in the leak phases (they must outlive a round; see wait_tokens_expired).
CYCLES_TTL=5
IDLE_TTL=45
BUILD=1
LOW_NOFILE=256
LOW_PORT=$((WSGATE_PORT + 1))
LOW_ADMIN_PORT=$((ADMIN_PORT + 1))
# After the second round RSS may exceed the first round's by at most the larger of these
# (allocator noise): 2 MiB, or 1/20 of the first round's growth over the baseline. A leak of
# a session's worth (~25 KiB) or of 1 KiB per connection shows far above either.
RSS_SLACK_KIB=2048
RSS_SLACK_SHARE=20
# The accept loop under EMFILE: at most this share of one CPU over the window.
MAX_SPIN_SHARE=0.10

while (($#)); do
    case $1 in
    --quick) CYCLES=2000 IDLE=2000 JWKS_SECONDS=12 BOUNCE_SECONDS=8 BOUNCE_CONNS=32 ;;
    --cycles) CYCLES=$2 && shift ;;
    --idle) IDLE=$2 && shift ;;
    --only) ONLY=$2 && shift ;;
    --no-build) BUILD=0 ;;
    -h | --help) sed -n '2,25p' "$0" && exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done

WORK=$ROOT/target/bench-soak
OUT=$WORK/out
ADMIN_TOKEN=soak-admin-$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')
FAILS=0
BASE_FDS=1000000000 BASE_THREADS=1000000000 BASE_RSS=0
ROWS=()
VERDICTS=()
trap 'stop_all' EXIT
trap 'exit 130' INT TERM

# 10,000 idle sessions need 20,000+ descriptors in the proxy; children inherit this.
HARD_NOFILE=$(ulimit -Hn)
[[ $HARD_NOFILE == unlimited ]] && HARD_NOFILE=1048576
ulimit -n "$HARD_NOFILE"

# --- configuration ------------------------------------------------------------------------

# wsgate's routing file: JWT against the local JWKS (refreshed every second, kept for an hour
# when the JWKS is down), Origin allowlist, limits out of the way of one client address.
soak_config() {
    local port=$1 admin=$2 handshake_timeout=$3
    cat <<EOF
listen:
  address: 127.0.0.1:$port
  tls:
    cert: $WORK/pki/server.crt
    key: $WORK/pki/server.key
  handshake_timeout: $handshake_timeout
  max_connections: 50000
  shutdown_grace: 2s
admin:
  address: 127.0.0.1:$admin
  token: $ADMIN_TOKEN
providers:
  - name: bench
    issuer: $ISSUER
    jwks_url: http://127.0.0.1:$JWKS_PORT/jwks.json
    audiences: [$AUDIENCE]
    algorithms: [RS256]
    refresh_interval: 1s
    max_stale: 1h
routes:
  - name: echo
    match:
      path: /echo
    backend: ws://127.0.0.1:$BACKEND_PORT/
    auth:
      provider: bench
      token_from: [header]
    origins:
      allow: [$ORIGIN]
      allow_missing: false
    limits:
      handshake_rate_per_ip: 1000000/s
      handshake_burst_per_ip: 1000000
      max_connections_per_subject: 100000
      message_rate: 1000000/s
      message_burst: 1000000
EOF
}

# --- processes ----------------------------------------------------------------------------

start_backend() {
    start backend "$BENCH" backend --listen "127.0.0.1:$BACKEND_PORT"
    BACKEND_PID=$STARTED
    wait_port "$BACKEND_PORT" "$BACKEND_PID" || die "the echo backend did not start"
}

start_jwks() {
    start jwks "$BENCH" jwks-serve --file "$WORK/keys/jwks.json" --listen "127.0.0.1:$JWKS_PORT" "$@"
    JWKS_PID=$STARTED
    wait_port "$JWKS_PORT" "$JWKS_PID" || die "the JWKS server did not start"
}

start_wsgate() {
    start wsgate "$WSGATE" run --config "$WORK/wsgate.yaml"
    PID=$STARTED
    wait_ready "$PID" || die "wsgate did not become ready (see $WORK/logs/wsgate.log)"
}

# The client options of every load command against the proxy on PORT; tokens live TOKEN_TTL.
client_args() {
    local port=${1:-$WSGATE_PORT}
    echo --url "wss://127.0.0.1:$port/echo" --ca "$WORK/pki/ca.crt" --origin "$ORIGIN" \
        --token-key "$WORK/keys/jwt-private.pem" --issuer "$ISSUER" --audience "$AUDIENCE" \
        --kid "$KID" --token-ttl "${TOKEN_TTL}s"
}

# wsgate caches every verified token until its `exp` (up to 100,000 of them, ~1.5 KiB each):
# with a fresh token per connection that is memory by design, not a leak. The leak phases use
# short-lived tokens and let the first round's tokens expire before the second round, whose
# inserts then evict them, so the rounds compare like with like.
wait_tokens_expired() {
    local since=$1
    while ((SECONDS < since + TOKEN_TTL + 1)); do
        sleep 1
    done
}

# Starts a load command in the background: JSON lines in $OUT/NAME.jsonl, stderr in the log.
loader() {
    local name=$1
    shift
    : >"$OUT/$name.jsonl"
    "$BENCH" "$@" >"$OUT/$name.jsonl" 2>"$WORK/logs/$name.log" &
    STARTED=$!
    PIDS+=("$STARTED")
}

# Prints the first JSON line of FILE whose event is EVENT; waits (bounded) while PID runs.
wait_event() {
    local file=$1 event=$2 pid=$3 seconds=$4 i line
    for i in $(seq $((seconds * 10))); do
        line=$(jq -c "select(.event == \"$event\")" "$file" 2>/dev/null | head -1 || true)
        [[ -n $line ]] && echo "$line" && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    line=$(jq -c "select(.event == \"$event\")" "$file" 2>/dev/null | head -1 || true)
    [[ -n $line ]] && echo "$line" && return 0
    log "no '$event' from $(basename "$file" .jsonl) within ${seconds}s (see $WORK/logs/)"
    return 1
}

# Runs a load command in the foreground and prints its `done` line.
run_loader() {
    local name=$1 seconds=$2
    shift 2
    loader "$name" "$@"
    local pid=$STARTED
    wait_event "$OUT/$name.jsonl" done "$pid" "$seconds" || { stop "$pid"; return 1; }
    stop "$pid"
}

# --- figures ------------------------------------------------------------------------------

metric_sum() { # NAME [LABEL-FILTER] [ADMIN-PORT]: the sum of a metric's samples
    curl -s --max-time 5 "http://127.0.0.1:${3:-$ADMIN_PORT}/metrics" |
        awk -v name="$1" -v filter="${2:-}" '
            $1 ~ "^"name"([{]|$)" && index($1, filter) { sum += $NF; seen = 1 }
            END { if (seen) print sum; else print 0 }'
}

sessions_count() {
    curl -s --max-time 5 -H "Authorization: Bearer $ADMIN_TOKEN" \
        "http://127.0.0.1:${1:-$ADMIN_PORT}/admin/sessions" | jq length 2>/dev/null || echo '?'
}

status_field() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
fds_of() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
# utime + stime (fields 14 and 15 of stat; the command name may hold spaces).
cpu_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0; }

# Reads the proxy's figures into F_RSS F_FDS F_THREADS F_ACTIVE F_SESSIONS and adds a row.
figures() {
    local phase=$1 point=$2 pid=${3:-$PID} admin=${4:-$ADMIN_PORT}
    F_RSS=$(status_field "$pid" VmRSS)
    F_FDS=$(fds_of "$pid")
    F_THREADS=$(status_field "$pid" Threads)
    F_ACTIVE=- F_SESSIONS=-
    if [[ $admin != - ]]; then # the admin listener cannot accept while descriptors are exhausted
        F_ACTIVE=$(metric_sum wsgate_connections_active "" "$admin")
        F_SESSIONS=$(sessions_count "$admin")
    fi
    ROWS+=("$(printf '%-8s %-26s %10s %8s %8s %8s %9s' "$phase" "$point" "$F_RSS" "$F_FDS" \
        "$F_THREADS" "$F_ACTIVE" "$F_SESSIONS")")
}

# Waits (bounded) until connections_active and the admin session list are both 0, then until
# the descriptors and threads are back to BASE_FDS / BASE_THREADS (blocking-pool threads
# linger 10 s); the caller reads the figures afterwards.
settle() {
    local seconds=$1 i
    for i in $(seq $((seconds * 5))); do
        [[ $(metric_sum wsgate_connections_active) == 0 && $(sessions_count) == 0 ]] && break
        sleep 0.2
    done
    for i in $(seq $((seconds * 5))); do
        (($(fds_of "$PID") <= BASE_FDS && $(status_field "$PID" Threads) <= BASE_THREADS)) && break
        sleep 0.2
    done
}

verdict() { # PHASE OK TEXT
    local phase=$1 ok=$2 text=$3
    if ((ok)); then
        VERDICTS+=("PASS  $phase: $text")
    else
        VERDICTS+=("FAIL  $phase: $text")
        FAILS=$((FAILS + 1))
    fi
    log "${VERDICTS[-1]}"
}

# Whether the figures just read are back to the baseline (0 sessions, fds and threads not
# above the baseline); sets BACK_TEXT.
back_to_baseline() {
    BACK_TEXT="active $F_ACTIVE, sessions $F_SESSIONS, fds $F_FDS (baseline $BASE_FDS), threads $F_THREADS (baseline $BASE_THREADS)"
    [[ $F_ACTIVE == 0 && $F_SESSIONS == 0 ]] && ((F_FDS <= BASE_FDS && F_THREADS <= BASE_THREADS))
}

baseline() {
    BASE_FDS=1000000000 BASE_THREADS=1000000000
    settle 15
    figures "$1" baseline
    BASE_RSS=$F_RSS BASE_FDS=$F_FDS BASE_THREADS=$F_THREADS
}

tally() { jq -r "$2" <<<"$1"; }

# Whether the second round's RSS (arg 2) is within the slack of the first's (arg 1); sets
# RSS_TEXT.
rss_steady() {
    local first=$1 second=$2 allowed
    allowed=$(((first - BASE_RSS) / RSS_SLACK_SHARE))
    ((allowed > RSS_SLACK_KIB)) || allowed=$RSS_SLACK_KIB
    RSS_TEXT="RSS $BASE_RSS -> $first -> $second KiB (second round $((second - first)) KiB, allowed +$allowed)"
    ((second <= first + allowed))
}

# --- phases -------------------------------------------------------------------------------

phase_cycles() {
    local half=$((CYCLES / 2)) round result opened=0 bad=0 back=1 rss=() t0 seconds=0 ended=0
    local TOKEN_TTL=$CYCLES_TTL
    run_loader cycles-warmup 120 cycles $(client_args) --count 200 --parallel 32 >/dev/null
    baseline cycles
    for round in 1 2; do
        ((round == 1)) || wait_tokens_expired "$ended"
        t0=$SECONDS
        result=$(run_loader "cycles-$round" 900 cycles $(client_args) --count "$half" --parallel 32) || result='{}'
        seconds=$((seconds + SECONDS - t0))
        opened=$((opened + $(tally "$result" '.tally.opened // 0')))
        bad=$((bad + $(tally "$result" '[.tally.failed // 1, (.tally.refused // {} | add // 0)] | add')))
        settle 30
        ended=$SECONDS
        figures cycles "after $((round * half)) closed"
        rss+=("$F_RSS")
        back_to_baseline || back=0
    done
    local rss_ok=0
    rss_steady "${rss[0]}" "${rss[1]}" && rss_ok=1
    verdict cycles $((opened == 2 * half && bad == 0 && back && rss_ok)) \
        "$opened of $((2 * half)) cycles upgraded and closed ($bad failed, ${seconds}s); $BACK_TEXT; $RSS_TEXT"
}

phase_idle() {
    baseline idle
    # Two descriptors per session in the proxy (client and backend side), under the hard limit.
    local fit=$(((HARD_NOFILE - BASE_FDS - 32) / 2))
    local n=$((IDLE < fit ? IDLE : fit)) round pid ready result ok=1 held_text="" rss=() early closed
    local TOKEN_TTL=$IDLE_TTL ended=0
    ((n < IDLE)) && log "idle: $IDLE sessions need $((2 * IDLE + BASE_FDS)) descriptors in the proxy; the hard limit is $HARD_NOFILE: holding $n"
    for round in 1 2; do
        ((round == 1)) || wait_tokens_expired "$ended"
        loader "idle-$round" hold $(client_args) --sessions "$n" --max-hold 300s
        pid=$STARTED
        ready=$(wait_event "$OUT/idle-$round.jsonl" ready "$pid" 600) || ready='{}'
        figures idle "round $round: $n held"
        [[ $(tally "$ready" '.tally.opened // 0') == "$n" && $F_ACTIVE == "$n" && $F_SESSIONS == "$n" ]] || ok=0
        held_text+="round $round: $(tally "$ready" '.tally.opened // 0') opened, active $F_ACTIVE, sessions $F_SESSIONS, fds $F_FDS; "
        kill -USR1 "$pid" 2>/dev/null || true
        result=$(wait_event "$OUT/idle-$round.jsonl" done "$pid" 120) || result='{}'
        stop "$pid"
        early=$(tally "$result" '.tally.ended_early // {} | add // 0')
        closed=$(tally "$result" '.tally.closed // 0')
        ((early == 0 && closed == n)) || ok=0
        ended=$SECONDS
        settle 30
        figures idle "round $round: closed"
        rss+=("$F_RSS")
        back_to_baseline || ok=0
    done
    local rss_ok=0
    rss_steady "${rss[0]}" "${rss[1]}" && rss_ok=1
    verdict idle $((ok && rss_ok)) \
        "$n sessions x 2 rounds: ${held_text}after: $BACK_TEXT; $RSS_TEXT"
}

phase_jwks() {
    figures jwks before
    local ok0 all0 ok1 all1 pid result end flaps=0 ready
    ok0=$(metric_sum wsgate_jwks_refresh_total 'result="ok"')
    all0=$(metric_sum wsgate_jwks_refresh_total)
    loader jwks-load cycles $(client_args) --duration "${JWKS_SECONDS}s" --parallel 8
    pid=$STARTED
    end=$((SECONDS + JWKS_SECONDS))
    # Down FLAP seconds (connection refused), up FLAP seconds (serving, 503, hanging up in
    # 1-second turns), and again; it ends up.
    while ((SECONDS < end)); do
        sleep "$FLAP"
        stop "$JWKS_PID"
        sleep "$FLAP"
        start_jwks --flap 1s
        flaps=$((flaps + 1))
    done
    result=$(wait_event "$OUT/jwks-load.jsonl" done "$pid" 120) || result='{}'
    stop "$pid"
    ok1=$(metric_sum wsgate_jwks_refresh_total 'result="ok"')
    all1=$(metric_sum wsgate_jwks_refresh_total)
    ready=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ADMIN_PORT/readyz")
    settle 30
    figures jwks after
    local opened refused failed fetch_ok=$((ok1 - ok0)) fetch_failed=$((all1 - all0 - (ok1 - ok0)))
    opened=$(tally "$result" '.tally.opened // 0')
    refused=$(tally "$result" '.tally.refused // {} | add // 0')
    failed=$(tally "$result" '.tally.failed // 1')
    verdict jwks $((opened > 0 && refused == 0 && failed == 0 && fetch_ok > 0 && fetch_failed > 0 && ready == 200)) \
        "$opened valid handshakes in ${JWKS_SECONDS}s, $refused refused $(tally "$result" '.tally.refused // {} | tostring'), $failed failed; JWKS down/up $flaps times: $fetch_failed failed and $fetch_ok good refreshes; /readyz $ready"
}

phase_backend() {
    figures backend before
    local pid0=$PID pid ready result live conns=$BOUNCE_CONNS held_active held_sessions
    loader bounce bounce $(client_args) --conns "$conns" --duration "${BOUNCE_SECONDS}s" \
        --settle 15s --max-hold 300s
    pid=$STARTED
    sleep $((BOUNCE_SECONDS / 3)) # echo load running
    kill -KILL "$BACKEND_PID"
    stop "$BACKEND_PID"
    sleep 2 # the backend is down: sessions get 1014, new upgrades 502
    start_backend
    ready=$(wait_event "$OUT/bounce.jsonl" ready "$pid" $((BOUNCE_SECONDS + 120))) || ready='{}'
    live=$(tally "$ready" '.live // 0')
    figures backend "$live live after restart"
    held_active=$F_ACTIVE held_sessions=$F_SESSIONS
    kill -USR1 "$pid" 2>/dev/null || true
    result=$(wait_event "$OUT/bounce.jsonl" done "$pid" 120) || result='{}'
    stop "$pid"
    settle 30
    figures backend after
    local c1014 other recovered early alive=0 panics
    c1014=$(tally "$result" '.tally.closes["1014"] // 0')
    other=$(tally "$result" '.tally.closes // {} | del(.["1014"]) | add // 0')
    recovered=$(tally "$result" '.tally.recovered // 0')
    early=$(tally "$result" '.tally.ended_early // {} | add // 0')
    kill -0 "$pid0" 2>/dev/null && [[ $PID == "$pid0" ]] && alive=1
    panics=$(grep -c -i 'panic' "$WORK/logs/wsgate.log" || true)
    verdict backend $((c1014 >= conns && other == 0 && recovered == c1014 && live == conns &&
        held_active == live && held_sessions == live && early == 0 && alive && panics == 0 &&
        F_ACTIVE == 0 && F_SESSIONS == 0)) \
        "$conns echo loops, backend killed and restarted: closes $(tally "$result" '.tally.closes // {} | tostring'), $recovered reconnected and echoed, upgrades refused meanwhile $(tally "$result" '.tally.refused // {} | tostring'), $(tally "$result" '.tally.round_trips // 0') round trips; $live live after: active $held_active, sessions $held_sessions; then active $F_ACTIVE, sessions $F_SESSIONS; proxy pid $pid0 $( ((alive)) && echo alive || echo GONE), $panics panics logged"
}

phase_ulimit() {
    soak_config "$LOW_PORT" "$LOW_ADMIN_PORT" 60s >"$WORK/wsgate-low.yaml"
    (ulimit -n "$LOW_NOFILE" && exec "$WSGATE" run --config "$WORK/wsgate-low.yaml") \
        >"$WORK/logs/wsgate-low.log" 2>&1 &
    local low=$! pid ready result raw=() fd i lines0 lines1 ticks0 ticks1 window=5
    PIDS+=("$low")
    ADMIN_PORT=$LOW_ADMIN_PORT wait_ready "$low" || die "the low-limit wsgate did not become ready"
    figures ulimit "baseline (-n $LOW_NOFILE)" "$low" "$LOW_ADMIN_PORT"
    local base_fds=$F_FDS held=$(((LOW_NOFILE - F_FDS) / 2 - 20))
    loader low-hold hold $(client_args "$LOW_PORT") --sessions "$held" --max-hold 300s
    pid=$STARTED
    ready=$(wait_event "$OUT/low-hold.jsonl" ready "$pid" 120) || ready='{}'
    figures ulimit "$held held" "$low" "$LOW_ADMIN_PORT"
    # Raw TCP connections that never start TLS: each accepted one holds a descriptor for the
    # handshake timeout (60s); the rest wait in the listen backlog while accept fails. The
    # backlog is 128 (tokio's default): more would block in connect, so 64 wait there.
    local spare=$((LOW_NOFILE - $(fds_of "$low")))
    for i in $(seq $((spare + 64))); do
        exec {fd}<>"/dev/tcp/127.0.0.1/$LOW_PORT"
        raw+=("$fd")
    done
    for i in $(seq 100); do
        (($(backoff_lines) > 0)) && break
        sleep 0.1
    done
    figures ulimit "+${#raw[@]} raw TCP (exhausted)" "$low" -
    local exhausted_fds=$F_FDS
    lines0=$(backoff_lines) ticks0=$(cpu_ticks "$low")
    sleep "$window"
    lines1=$(backoff_lines) ticks1=$(cpu_ticks "$low")
    for fd in "${raw[@]}"; do
        exec {fd}>&-
    done
    # Recovery: a few valid clients get through once the raw connections are gone.
    result=$(run_loader low-cycles 120 cycles $(client_args "$LOW_PORT") --count 20 --parallel 4 \
        --open-timeout 20s) || result='{}'
    local recovered_ok=$(tally "$result" '.tally.opened // 0')
    figures ulimit "recovered" "$low" "$LOW_ADMIN_PORT"
    kill -USR1 "$pid" 2>/dev/null || true
    local held_done
    held_done=$(wait_event "$OUT/low-hold.jsonl" done "$pid" 120) || held_done='{}'
    stop "$pid"
    local cpu_ms=$(((ticks1 - ticks0) * 10)) lines=$((lines1 - lines0)) early closed spin_ok
    early=$(tally "$held_done" '.tally.ended_early // {} | add // 0')
    closed=$(tally "$held_done" '.tally.closed // 0')
    spin_ok=$(awk -v ms="$cpu_ms" -v w="$window" -v max="$MAX_SPIN_SHARE" 'BEGIN { print (ms / 1000 <= w * max) ? 1 : 0 }')
    kill -0 "$low" 2>/dev/null || spin_ok=0
    stop "$low"
    verdict ulimit $((exhausted_fds >= LOW_NOFILE && lines > 0 && spin_ok && recovered_ok == 20 &&
        early == 0 && closed == held)) \
        "fds $base_fds -> $exhausted_fds of $LOW_NOFILE; over ${window}s exhausted: $lines 'accept failed; backing off' lines, ${cpu_ms} ms proxy CPU (allowed $(awk -v w="$window" -v m="$MAX_SPIN_SHARE" 'BEGIN { print w * m * 1000 }') ms); after closing the raw connections $recovered_ok of 20 valid clients upgraded; the $held held sessions: $closed closed as told, $early ended early"
}

# Log lines of the low-limit wsgate's public accept loop backing off.
backoff_lines() {
    grep 'accept failed; backing off' "$WORK/logs/wsgate-low.log" | grep -vc 'admin accept' || true
}

# --- main ---------------------------------------------------------------------------------

main() {
    local load
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    if ((BUILD)); then
        log "building (release)"
        (cd "$ROOT" && cargo build --release --quiet -p wsgate -p wsgate-bench)
    fi
    check_ports "$BACKEND_PORT" "$JWKS_PORT" "$WSGATE_PORT" "$ADMIN_PORT" "$LOW_PORT" "$LOW_ADMIN_PORT"
    rm -rf "$WORK"
    mkdir -p "$WORK/logs" "$OUT"
    "$BENCH" keys --out-dir "$WORK/keys" --kid "$KID" >/dev/null
    "$BENCH" certs --out-dir "$WORK/pki" >/dev/null
    start_backend
    start_jwks
    soak_config "$WSGATE_PORT" "$ADMIN_PORT" 10s >"$WORK/wsgate.yaml"
    "$WSGATE" check --config "$WORK/wsgate.yaml" >/dev/null
    start_wsgate
    log "wsgate pid $PID; descriptor limit $(ulimit -n) (hard $HARD_NOFILE); load average $load"

    local phase
    for phase in ${ONLY//,/ }; do
        case $phase in
        1) log "phase 1: $CYCLES connect/upgrade/close cycles" && phase_cycles ;;
        2) log "phase 2: $IDLE idle sessions (or what fits), two rounds" && phase_idle ;;
        3) log "phase 3: JWKS flapping for ${JWKS_SECONDS}s under handshake load" && phase_jwks ;;
        4) log "phase 4: backend killed and restarted under echo load" && phase_backend ;;
        5) log "phase 5: ulimit -n $LOW_NOFILE exhaustion" && phase_ulimit ;;
        *) die "unknown phase $phase" ;;
        esac
    done

    echo
    echo "wsgate soak ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, load average at start $load)"
    echo
    printf '%-8s %-26s %10s %8s %8s %8s %9s\n' phase point 'RSS KiB' fds threads active sessions
    printf '%s\n' "${ROWS[@]}"
    echo
    printf '%s\n' "${VERDICTS[@]}"
    echo
    ((FAILS == 0)) && echo "soak: all phases passed" && return 0
    echo "soak: $FAILS phase(s) failed (logs in $WORK/logs)"
    return 1
}

main
