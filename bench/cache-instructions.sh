#!/usr/bin/env bash
# Instructions per cache hit (or, with ROUTE=proxied, per proxied request),
# counted by callgrind: repeatable where CPU time is not.
#
# For each build (BASE = JUNCTION_BASE, default HEAD~1; HEAD = the working tree),
# Junction runs under `valgrind --tool=callgrind` with one data thread, and a
# keep-alive client sends N1, then (in a second run) N2 GETs of one warm key of a
# `cache: { ttl: 300s }` route. Start-up and shutdown cost the same in both runs,
# so (I(N2) - I(N1)) / (N2 - N1) is what one hit costs, in instructions.
#
# Env: N1 (500), N2 (2500), JUNCTION_BASE (HEAD~1), BENCH_PORT_BASE (18400),
# ROUTE (cached: a cache hit; proxied: the same route without a cache, every
# request forwarded to the upstream over a pooled keep-alive connection),
# BINARIES (a directory holding junction-base and junction-head from an earlier
# run: no builds).
source "$(dirname "$0")/lib.sh"

BASE_PORT="${BENCH_PORT_BASE:-18400}"
UP_PORT=$((BASE_PORT + 1)) J_PORT=$((BASE_PORT + 2)) J_ADMIN=$((BASE_PORT + 12))
N1="${N1:-500}"
N2="${N2:-2500}"
JUNCTION_BASE="${JUNCTION_BASE:-HEAD~1}"
ROUTE="${ROUTE:-cached}"
case "$ROUTE" in
    cached) CACHE_LINE='    cache: { ttl: 300s }' EXPECT=HIT UNIT="cache hit" ;;
    proxied) CACHE_LINE='' EXPECT=- UNIT="proxied request" ;;
    *) die "ROUTE is cached or proxied, not $ROUTE" ;;
esac
WORK="$OUT_DIR/$ROUTE-instructions"
BODY='{"id":42,"name":"widget","price":19.99,"stock":7}'

ensure_tool valgrind valgrind
ensure_tool nginx nginx-light
ensure_tool curl curl
rm -rf "$WORK" && mkdir -p "$WORK"
for p in $UP_PORT $J_PORT $J_ADMIN; do require_free_port "$p"; done
base_sha=$(git -C "$REPO_DIR" rev-parse --short "$JUNCTION_BASE")
if [ -n "${BINARIES:-}" ]; then
    # Both builds of an earlier run (its WORK directory), e.g. ROUTE=proxied's for ROUTE=cached.
    cp "$BINARIES/junction-base" "$BINARIES/junction-head" "$WORK/" || die "no builds in $BINARIES"
else
    JUNCTION_REF="$base_sha" build_junction && cp "$JUNCTION_BIN" "$WORK/junction-base"
    JUNCTION_REF="" build_junction && cp "$JUNCTION_BIN" "$WORK/junction-head"
fi
start_json_upstream "$WORK/upstream" "$UP_PORT" "$BODY"

cat >"$WORK/junction.yaml" <<EOF
listen: 127.0.0.1:$J_PORT
admin: { listen: 127.0.0.1:$J_ADMIN }
upstreams:
  up: { url: "http://127.0.0.1:$UP_PORT", timeout: 2s }
routes:
  - name: cached
    match: { method: GET, path: /products/{id} }
    upstream: up
$CACHE_LINE
EOF

# N GETs of one key over one keep-alive connection; fails on anything but a
# 200 (and, on the cached route, a HIT after the first).
cat >"$WORK/client.py" <<'EOF'
import http.client, sys
port, n, expect = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
for i in range(n):
    conn.request("GET", "/products/1")
    r = conn.getresponse()
    r.read()
    state = r.getheader("x-junction-cache") or "-"
    if r.status != 200 or (i > 0 and state != expect):
        sys.exit(f"request {i}: {r.status} {state}")
EOF

# Total instructions of one Junction run serving N hits. instructions BIN N LABEL
instructions() {
    local bin="$1" n="$2" label="$3" out="$WORK/$3.callgrind"
    JUNCTION_WORKERS=1 RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$out" \
        "$bin" serve --config "$WORK/junction.yaml" 2>"$WORK/$label.log" &
    local pid=$!
    STARTED_PIDS+=("$pid")
    for _ in $(seq 1 600); do
        curl -fsS "http://127.0.0.1:$J_ADMIN/readyz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    python3 "$WORK/client.py" "$J_PORT" "$n" "$EXPECT" || die "client failed ($label)"
    # callgrind writes its counts at exit: let the graceful shutdown finish (slow under valgrind).
    kill -TERM "$pid"
    for _ in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    stop_pid "$pid"
    [ -s "$out" ] || die "no callgrind output for $label"
    awk '/^summary:/ {print $2}' "$out"
}

{
    echo "== instructions per $UNIT (callgrind, 1 data thread, keep-alive client, one key)"
    printf "%-28s %16s %16s %16s\n" "build" "I($N1)" "I($N2)" "per request"
    for build in base head; do
        i1=$(instructions "$WORK/junction-$build" "$N1" "$build-$N1")
        i2=$(instructions "$WORK/junction-$build" "$N2" "$build-$N2")
        per=$(( (i2 - i1) / (N2 - N1) ))
        eval "PER_$build=$per"
        if [ "$build" = base ]; then
            name="base ($base_sha)"
        else
            name="head ($(git -C "$REPO_DIR" rev-parse --short HEAD) + working tree)"
        fi
        printf "%-28s %16s %16s %16s\n" "$name" "$i1" "$i2" "$per"
    done
    awk -v a="$PER_head" -v b="$PER_base" 'BEGIN {printf "head / base instructions per request: %.3f\n", a / b}'
} | tee "$WORK/summary.txt"
