#!/usr/bin/env bash
# Where a proxied request's cost goes, counted rather than timed (issue 20):
# instructions per request (valgrind --tool=callgrind) and system calls per
# request (strace -c) for Junction, bench/hyper-floor (the smallest hyper proxy)
# and nginx proxy_pass, each with one worker thread, serving one keep-alive
# client that sends small GETs proxied to an nginx origin (`return 200`, 49-byte
# JSON) over a pooled keep-alive upstream connection.
#
# Instructions: each server runs under callgrind twice, serving N1 and then N2
# requests; start-up and shutdown cost the same in both runs, so
# (I(N2) - I(N1)) / (N2 - N1) is one request. Repeatable whatever else runs.
# System calls: strace -c -f attached to the server (outside valgrind) while
# it serves N2 requests, per request and by name.
#
# Output: bench/out/floor/summary.txt; the callgrind files stay beside it for
# callgrind_annotate.
#
# Env: N1 (500), N2 (2500), BENCH_PORT_BASE (18500), JUNCTION_REF,
#      BINARY (a junction binary built already: no build).
source "$(dirname "$0")/lib.sh"

BASE="${BENCH_PORT_BASE:-18500}"
UP=$((BASE + 1)) SRV=$((BASE + 2)) ADMIN=$((BASE + 12))
N1="${N1:-500}"
N2="${N2:-2500}"
WORK="$OUT_DIR/floor"
BODY='{"id":42,"name":"widget","price":19.99,"stock":7}'

ensure_tool valgrind valgrind
ensure_tool strace strace
ensure_tool nginx nginx-light
ensure_tool curl curl
rm -rf "$WORK" && mkdir -p "$WORK"
for p in $UP $SRV $ADMIN; do require_free_port "$p"; done
machine_info | tee "$WORK/machine.txt"
if [ -n "${BINARY:-}" ]; then JUNCTION_BIN="$BINARY"; else build_junction; fi
log "building bench/hyper-floor (release)"
(cd "$BENCH_DIR/hyper-floor" && cargo build --release -q) || die "hyper-floor build failed"
start_json_upstream "$WORK/upstream" "$UP" "$BODY"

cat >"$WORK/junction.yaml" <<EOF
listen: 127.0.0.1:$SRV
admin: { listen: 127.0.0.1:$ADMIN }
queue: { backend: embedded, path: $WORK/queue }
upstreams:
  origin: { url: "http://127.0.0.1:$UP" }
routes:
  - { name: proxied, match: { path: "/{*rest}" }, upstream: origin }
EOF
# nginx as one process (no master), one worker connection pool to the origin.
write_nginx_conf "$WORK/nginx" 1 <<EOF
    upstream origin { server 127.0.0.1:$UP; keepalive 16; keepalive_requests 10000000; }
    server {
        listen 127.0.0.1:$SRV;
        location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
EOF
mkdir -p "$WORK/nginx/logs" "$WORK/nginx/tmp" && chmod 777 "$WORK/nginx/tmp"

# N GETs over one keep-alive connection; fails on anything but a 200.
cat >"$WORK/client.py" <<'EOF'
import http.client, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
for i in range(n):
    # No Accept-Encoding (as wrk): http.client would otherwise send "identity".
    conn.putrequest("GET", "/products/42", skip_accept_encoding=True)
    conn.endheaders()
    r = conn.getresponse()
    r.read()
    if r.status != 200:
        sys.exit(f"request {i}: {r.status}")
EOF

# Starts a server (optionally under a wrapper), waits for its port, sets SERVER_PID.
# start_server NAME [WRAPPER...]
start_server() {
    local name="$1"; shift
    local -a cmd
    case "$name" in
        junction) cmd=("$JUNCTION_BIN" serve --config "$WORK/junction.yaml") ;;
        hyper-floor) cmd=("$CARGO_TARGET_DIR/release/hyper-floor" "127.0.0.1:$SRV" "http://127.0.0.1:$UP" tpc 1) ;;
        nginx) cmd=(nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off; master_process off;') ;;
    esac
    JUNCTION_WORKERS=1 RUST_LOG=warn "$@" "${cmd[@]}" 2>"$WORK/$name.$$.log" &
    SERVER_PID=$!
    STARTED_PIDS+=("$SERVER_PID")
    for _ in $(seq 1 600); do
        if [ "$name" = junction ]; then
            curl -fsS "http://127.0.0.1:$ADMIN/readyz" >/dev/null 2>&1 && break
        else
            (exec 3<>"/dev/tcp/127.0.0.1/$SRV") 2>/dev/null && break
        fi
        sleep 0.1
    done
}

# Stops a server gracefully (callgrind writes its counts at exit), bounded.
stop_server() {
    local pid="$1" sig=TERM
    [ "$2" = nginx ] && sig=QUIT
    kill -"$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    stop_pid "$pid"
}

# Total instructions of one run serving N requests: instructions NAME N
instructions() {
    local name="$1" n="$2" out="$WORK/$1-$2.callgrind"
    start_server "$name" valgrind --tool=callgrind --callgrind-out-file="$out"
    python3 "$WORK/client.py" "$SRV" "$n" || die "client failed ($name, $n)"
    stop_server "$SERVER_PID" "$name"
    [ -s "$out" ] || die "no callgrind output for $name"
    awk '/^summary:/ {print $2}' "$out"
}

# System calls per request while serving N2 requests: syscalls NAME -> "total per-request top"
syscalls() {
    local name="$1" out="$WORK/$1.strace"
    start_server "$name"
    python3 "$WORK/client.py" "$SRV" 50 || die "client failed ($name warm-up)"
    strace -c -f -S calls -o "$out" -p "$SERVER_PID" 2>/dev/null &
    local st=$!
    sleep 1
    python3 "$WORK/client.py" "$SRV" "$N2" || die "client failed ($name)"
    kill -INT "$st"; wait "$st" 2>/dev/null || true
    stop_server "$SERVER_PID" "$name"
    # Rows: % time, seconds, usecs/call, calls, [errors], name; sorted by calls.
    awk -v n="$N2" '/^ *[0-9]/ && $NF != "total" {t += $4; if ($4 / n >= 0.01) top = top sprintf("%s %.2f, ", $NF, $4 / n)}
        END {printf "%.2f|%s\n", t / n, top}' "$out"
}

{
    echo "== one keep-alive client, small GETs proxied over a pooled keep-alive connection; 1 worker thread each"
    printf "%-12s %18s %18s %14s %12s  %s\n" "server" "I($N1)" "I($N2)" "instr / req" "syscalls/req" "syscalls by name, per request"
    for name in junction hyper-floor nginx; do
        log "$name: callgrind $N1 and $N2 requests, then strace"
        i1=$(instructions "$name" "$N1")
        i2=$(instructions "$name" "$N2")
        IFS='|' read -r sc top < <(syscalls "$name")
        printf "%-12s %18s %18s %14s %12s  %s\n" "$name" "$i1" "$i2" "$(( (i2 - i1) / (N2 - N1) ))" "$sc" "${top%, }"
    done
} | tee "$WORK/summary.txt"
log "callgrind files in $WORK (callgrind_annotate $WORK/junction-$N2.callgrind)"
