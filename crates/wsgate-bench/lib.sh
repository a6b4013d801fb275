# Shared by compare.sh and callgrind.sh (sourced, not run): paths, ports, process control and
# the configuration files of every target. Everything listens on 127.0.0.1 only.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=$ROOT/target/release
BENCH=$BIN/wsgate-bench
WSGATE=$BIN/wsgate

PORT_BASE=${BENCH_PORT_BASE:-19400}
BACKEND_PORT=$((PORT_BASE + 1))
JWKS_PORT=$((PORT_BASE + 2))
WSGATE_PORT=$((PORT_BASE + 43))
HAPROXY_PORT=$((PORT_BASE + 44))
NGINX_PORT=$((PORT_BASE + 45))
REDIS_PORT=$((PORT_BASE + 46))
ADMIN_PORT=$((PORT_BASE + 90))

ORIGIN=https://app.bench.example
ISSUER=https://issuer.bench.example/
AUDIENCE=bench
KID=bench

PIDS=()

log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Starts a command in the background with its output in $WORK/logs/NAME.log; sets $STARTED.
start() {
    local name=$1
    shift
    "$@" >"$WORK/logs/$name.log" 2>&1 &
    STARTED=$!
    PIDS+=("$STARTED")
}

# Stops one process that this script started (and forgets it): TERM, then KILL after 10 s.
stop() {
    local pid=$1 i kept=() p
    for p in "${PIDS[@]}"; do
        [[ $p == "$pid" ]] || kept+=("$p")
    done
    PIDS=("${kept[@]}")
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# Stops every process still running that this script started, newest first.
stop_all() {
    local i
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        stop "${PIDS[i]}"
    done
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Waits until 127.0.0.1:PORT accepts connections (bounded).
wait_port() {
    local port=$1 pid=$2 i
    for i in $(seq 200); do
        port_free "$port" || return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# Waits until wsgate's /readyz answers 200 (bounded; valgrind is slow).
wait_ready() {
    local pid=$1 seconds=${2:-20} i
    for i in $(seq $((seconds * 10))); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ADMIN_PORT/readyz") == 200 ]] && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

check_ports() {
    local port
    for port in "$@"; do
        port_free "$port" || die "port $port is in use (set BENCH_PORT_BASE to move every port)"
    done
}

# Keys, certificates, the echo backend and the JWKS server.
setup_common() {
    mkdir -p "$WORK/logs"
    "$BENCH" keys --out-dir "$WORK/keys" --kid "$KID" >/dev/null
    "$BENCH" certs --out-dir "$WORK/pki" >/dev/null
    start backend "$BENCH" backend --listen "127.0.0.1:$BACKEND_PORT"
    wait_port "$BACKEND_PORT" "$STARTED" || die "the echo backend did not start"
    start jwks "$BENCH" jwks-serve --file "$WORK/keys/jwks.json" --listen "127.0.0.1:$JWKS_PORT"
    wait_port "$JWKS_PORT" "$STARTED" || die "the JWKS server did not start"
}

# wsgate's routing file (config.example.yaml documents every key). LEVEL: full (JWT, Origin,
# rate limits raised out of the way), auth (JWT and Origin, default limits) or basic (TLS + relay only).
wsgate_config() {
    local level=$1
    cat <<EOF
listen:
  address: 127.0.0.1:$WSGATE_PORT
  tls:
    cert: $WORK/pki/server.crt
    key: $WORK/pki/server.key
  max_connections: 50000
  shutdown_grace: 2s
admin:
  address: 127.0.0.1:$ADMIN_PORT
EOF
    if [[ $level != basic ]]; then
        cat <<EOF
providers:
  - name: bench
    issuer: $ISSUER
    jwks_url: http://127.0.0.1:$JWKS_PORT/jwks.json
    audiences: [$AUDIENCE]
    algorithms: [RS256]
EOF
    fi
    echo "routes:"
    echo_route "$level" echo /echo
    if [[ ${WSGATE_RULES:-0} == 1 && $level == full ]]; then
        # The same route once more with message rules (issue 16): JSON text, a small schema.
        cp "$ROOT/examples/schemas/chat.json" "$WORK/chat-schema.json"
        echo_route "$level" echo-json /echo-json
        cat <<EOF
    messages:
      text: json
      schema: $WORK/chat-schema.json
EOF
    fi
}

# One route NAME on PATH to the echo backend, at LEVEL (see wsgate_config).
echo_route() {
    local level=$1 name=$2 path=$3
    cat <<EOF
  - name: $name
    match:
      path: $path
    backend: ws://127.0.0.1:$BACKEND_PORT/
EOF
    if [[ $level != basic ]]; then
        cat <<EOF
    auth:
      provider: bench
      token_from: [header]
    origins:
      allow: [$ORIGIN]
      allow_missing: false
EOF
    fi
    echo "    limits:"
    if [[ $level == full ]]; then
        # The defaults (20 handshakes/s per IP, 100 messages/s per connection, 10 sessions per
        # subject) would throttle a benchmark from one address; HAProxy and nginx have none.
        cat <<EOF
      handshake_rate_per_ip: 1000000/s
      handshake_burst_per_ip: 1000000
      max_connections_per_subject: 100000
      message_rate: 1000000/s
      message_burst: 1000000
EOF
    fi
    echo "      max_message_size: 1MiB"
}

# Writes $WORK/wsgate.yaml with the most complete level this wsgate accepts; sets
# WSGATE_LEVEL and WSGATE_LABEL ("wsgate", or "wsgate (no JWT yet)"), and WSGATE_RULES=1 when
# it also takes the full level's second route with message rules (/echo-json).
choose_wsgate_config() {
    local level
    WSGATE_RULES=1
    wsgate_config full >"$WORK/wsgate-rules.yaml"
    if "$WSGATE" check --config "$WORK/wsgate-rules.yaml" >"$WORK/logs/wsgate-check-rules.log" 2>&1; then
        cp "$WORK/wsgate-rules.yaml" "$WORK/wsgate.yaml"
        WSGATE_LEVEL=full
        WSGATE_LABEL=wsgate
        return 0
    fi
    WSGATE_RULES=0
    for level in full auth basic; do
        wsgate_config "$level" >"$WORK/wsgate-$level.yaml"
        if "$WSGATE" check --config "$WORK/wsgate-$level.yaml" >"$WORK/logs/wsgate-check-$level.log" 2>&1; then
            cp "$WORK/wsgate-$level.yaml" "$WORK/wsgate.yaml"
            WSGATE_LEVEL=$level
            WSGATE_LABEL=wsgate
            [[ $level == basic ]] && WSGATE_LABEL="wsgate (no JWT yet)"
            [[ $level == full ]] || log "wsgate refused the $([[ $level == auth ]] && echo full || echo auth) config (see $WORK/logs/); using level '$level'"
            return 0
        fi
    done
    cat "$WORK/logs/wsgate-check-basic.log" >&2
    die "wsgate refused even the basic configuration"
}

# wsgate.yaml plus a cluster block on the local redis-server (target wsgate-fleet): the same
# routes and limits, with per-subject caps and per-IP handshake rates counted in Redis.
wsgate_fleet_config() {
    cat "$WORK/wsgate.yaml"
    cat <<EOF
cluster:
  redis: redis://127.0.0.1:$REDIS_PORT/0
  instance: bench
EOF
}

haproxy_config() {
    cat <<EOF
global
    maxconn 9800
    log stderr format short local0 warning
    ssl-default-bind-options ssl-min-ver TLSv1.2

defaults
    mode http
    log global
    maxconn 9800
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    timeout http-request 10s

frontend wss
    bind 127.0.0.1:$HAPROXY_PORT ssl crt $WORK/pki/server.pem alpn http/1.1
    # Cheap checks first, the RSA signature last.
    http-request deny status 426 unless { req.hdr(upgrade) -i websocket }
    http-request deny status 403 unless { req.hdr(origin) -m str $ORIGIN }
    http-request deny status 401 unless { req.hdr(authorization) -m beg "Bearer " }
    http-request set-var(txn.bearer) http_auth_bearer
    http-request set-var(txn.jwt_alg) var(txn.bearer),jwt_header_query('\$.alg')
    http-request deny status 401 unless { var(txn.jwt_alg) -m str RS256 }
    http-request set-var(txn.iss) var(txn.bearer),jwt_payload_query('\$.iss')
    http-request deny status 401 unless { var(txn.iss) -m str "$ISSUER" }
    http-request set-var(txn.aud) var(txn.bearer),jwt_payload_query('\$.aud')
    http-request deny status 401 unless { var(txn.aud) -m str $AUDIENCE }
    http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('\$.exp','int')
    http-request set-var(txn.now) date()
    http-request deny status 401 unless { var(txn.exp),sub(txn.now) -m int gt 0 }
    http-request deny status 401 unless { var(txn.bearer),jwt_verify(txn.jwt_alg,"$WORK/keys/jwt-public.pem") -m int 1 }
    # The token never reaches the backend (as with wsgate).
    http-request del-header authorization
    default_backend echo

backend echo
    server b1 127.0.0.1:$BACKEND_PORT
EOF
}

nginx_config() {
    cat <<EOF
worker_processes auto;
worker_rlimit_nofile 19500;
pid $WORK/nginx/nginx.pid;
error_log $WORK/logs/nginx-error.log warn;

events {
    worker_connections 19000;
}

http {
    access_log off;
    client_body_temp_path $WORK/nginx/client_body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;

    upstream echo_backend {
        server 127.0.0.1:$BACKEND_PORT;
    }

    server {
        listen 127.0.0.1:$NGINX_PORT ssl;
        ssl_certificate $WORK/pki/server.crt;
        ssl_certificate_key $WORK/pki/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;

        location /echo {
            # nginx has no JWT verification: it only checks that the headers are present.
            if (\$http_origin != "$ORIGIN") {
                return 403;
            }
            if (\$http_authorization !~ "^Bearer .+") {
                return 401;
            }
            proxy_pass http://echo_backend/;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_set_header Authorization "";
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }
    }
}
EOF
}
