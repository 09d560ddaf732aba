#!/usr/bin/env bash
# Response cache (issue 3): what a cache hit costs, what nginx's proxy_cache does on
# the same upstream in the same run, request coalescing under 1,000 concurrent misses,
# and the cost of `?fields=` projection on a 100 KB JSON body.
#
# Upstream: nginx answering `return 200` with a 49-byte JSON body on /products/{id}
# (same as sync-proxy.sh). One Junction instance serves two routes to it:
#   /products/{id}         uncached (plain proxy)
#   /cached/products/{id}  cache: { ttl: 300s }, upstream path /products/{id}
# so both rows share one process, one config and one upstream pool.
#
# Rows (THREADS x CONNS, DURATION s after WARMUP s, GET one key, so every cached
# request after the first is a hit):
#   (d) direct to the upstream   (a) Junction uncached   (b) Junction cached, all hits
#   (c) nginx proxy_cache (proxy_cache_path in a temp dir, proxy_cache_valid 200 5m,
#       keep-alive upstream pool), all hits
# Then direct, Junction hit and nginx hit open loop: oha at fixed rates (OPEN_RATES,
# default 10k 20k 40k req/s, OPEN_DURATION s each, CONNS connections), below what
# every target can serve, so the p99s compare per-request cost, not queueing.
# Then the same four at 1 connection with everything pinned to CPU 0 (C1_DURATION s),
# where queueing does not hide per-request cost.
#
# (e) Coalescing: a Python ThreadingHTTPServer upstream that sleeps SLOW_MS (200) per
# request and counts requests; 1,000 clients connect first, then all send GET on one
# cold key at once (a small asyncio client); reported: upstream calls, caller latency.
#
# (f) `cargo bench -p junction-cache --bench projection` (criterion): project a ~100 KB
# JSON body to 3 fields (SKIP_PROJECTION=1 to skip).
#
# Before every measured run: waits (at most OTHER_WRK_WAIT s, default 180) until no
# other `wrk` process runs on the machine, then (at most QUIET_MAX s, default 30) until
# the CPUs are < 25 % busy, and records the load average and busy % it started at.
#
# Env: THREADS CONNS DURATION WARMUP (2 64 10 3), C1_DURATION (5), OPEN_RATES, OPEN_DURATION (10), SLOW_MS (200),
#      COALESCE_N (1000), BENCH_PORT_BASE (18200), OTHER_WRK_WAIT (180), QUIET_MAX (30).
source "$(dirname "$0")/lib.sh"

BASE="${BENCH_PORT_BASE:-18200}"
UP_PORT=$((BASE + 1)) NGC_PORT=$((BASE + 2)) J_PORT=$((BASE + 3)) J_ADMIN=$((BASE + 13))
SLOW_PORT=$((BASE + 4))
C1_DURATION="${C1_DURATION:-5}"
OPEN_RATES="${OPEN_RATES:-10000 20000 40000}"
OPEN_DURATION="${OPEN_DURATION:-10}"
SLOW_MS="${SLOW_MS:-200}"
COALESCE_N="${COALESCE_N:-1000}"
OTHER_WRK_WAIT="${OTHER_WRK_WAIT:-180}"
QUIET_MAX="${QUIET_MAX:-30}"  # then at most this long for CPUs < 25 % busy (lib.sh wait_quiet)
WORK="$OUT_DIR/cache"
RESULTS="$OUT_DIR/cache.tsv"
BODY='{"id":42,"name":"widget","price":19.99,"stock":7}'

ensure_tool wrk wrk
ensure_tool nginx nginx-light
ensure_tool jq jq
ensure_tool curl curl
ensure_tool python3 python3
ensure_oha
machine_info | tee "$OUT_DIR/cache.machine.txt"
build_junction
rm -rf "$WORK" && mkdir -p "$WORK"
for p in $UP_PORT $NGC_PORT $J_PORT $J_ADMIN $SLOW_PORT; do require_free_port "$p"; done
# 1,000 client sockets plus Junction's side of them.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# Waits (bounded) until no `wrk` of anyone else runs; echoes the 1-min load average.
wait_no_other_wrk() {
    local t=0
    while pgrep -x wrk >/dev/null; do
        if [ "$t" -ge "$OTHER_WRK_WAIT" ]; then log "another wrk still running after ${OTHER_WRK_WAIT}s; measuring anyway"; break; fi
        [ "$t" -eq 0 ] && log "another wrk is running; waiting (at most ${OTHER_WRK_WAIT}s)"
        sleep 2; t=$((t + 2))
    done
    cut -d' ' -f1 /proc/loadavg
}

# --- upstream: nginx `return 200` (as in sync-proxy.sh) ----------------------------
start_json_upstream "$WORK/upstream" "$UP_PORT" "$BODY"

# --- (c) nginx proxy_cache -----------------------------------------------------------
mkdir -p "$WORK/nginx-cache/cache"
write_nginx_conf "$WORK/nginx-cache" auto <<EOF
    proxy_cache_path $WORK/nginx-cache/cache levels=1:2 keys_zone=api:10m max_size=100m inactive=10m use_temp_path=off;
    upstream api {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;
        keepalive_requests 10000000;
    }
    server {
        listen 127.0.0.1:$NGC_PORT;
        location / {
            proxy_pass http://api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache api;
            proxy_cache_valid 200 5m;
            proxy_cache_lock on;
            add_header X-Cache-Status \$upstream_cache_status;
        }
    }
EOF
start_nginx "$WORK/nginx-cache" "$NGC_PORT"
NGC_PID=$NGINX_PID

# --- slow upstream for (e): sleeps SLOW_MS, counts requests in a file -------------------
cat >"$WORK/slow_upstream.py" <<'EOF'
"""Slow JSON upstream: sleeps, then answers; counts requests in a file."""
import sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, delay_ms, count_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
lock, count = threading.Lock(), 0
open(count_file, "w").write("0\n")

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        global count
        with lock:
            count += 1
            with open(count_file, "w") as f:
                f.write(f"{count}\n")
        time.sleep(delay_ms / 1000)
        body = b'{"id":7,"name":"slow widget","price":1.5}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer.request_queue_size = 1024
ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
EOF
python3 "$WORK/slow_upstream.py" "$SLOW_PORT" "$SLOW_MS" "$WORK/slow-count" 2>"$WORK/slow_upstream.log" &
STARTED_PIDS+=("$!")
wait_port "$SLOW_PORT"

# Coalescing client for (e): N clients connect first, then all send one GET at once.
cat >"$WORK/coalesce_client.py" <<'EOF'
#!/usr/bin/env python3
"""Coalescing client for bench/cache.sh: N clients connect first, then all send one GET at once.

Usage: coalesce_client.py HOST PORT PATH N
Prints one JSON line: status counts, x-junction-cache values, and caller latency
(from the moment the request is written to the end of the response) in microseconds.
"""
import asyncio
import json
import sys
import time


async def main(host, port, path, n):
    conns = await asyncio.gather(*(asyncio.open_connection(host, port) for _ in range(n)))
    go = asyncio.Event()
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()

    async def one(reader, writer):
        await go.wait()
        start = time.perf_counter()
        writer.write(request)
        await writer.drain()
        data = await reader.read()  # Connection: close -> read to EOF
        elapsed = time.perf_counter() - start
        writer.close()
        head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        status = int(head[0].split(" ")[1]) if head and head[0].startswith("HTTP/") else 0
        cache = next((h.split(":", 1)[1].strip() for h in head[1:] if h.lower().startswith("x-junction-cache:")), "-")
        return status, cache, elapsed

    tasks = [asyncio.create_task(one(r, w)) for r, w in conns]
    await asyncio.sleep(0.2)  # every task is parked on the event
    wall = time.perf_counter()
    go.set()
    results = await asyncio.gather(*tasks)
    wall = time.perf_counter() - wall
    lat = sorted(e for _, _, e in results)

    def pct(p):
        return round(lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1e6)

    statuses, caches = {}, {}
    for s, c, _ in results:
        statuses[str(s)] = statuses.get(str(s), 0) + 1
        caches[c] = caches.get(c, 0) + 1
    print(json.dumps({"clients": n, "status": statuses, "x_junction_cache": caches,
                      "p50_us": pct(50), "p99_us": pct(99), "max_us": round(lat[-1] * 1e6),
                      "min_us": round(lat[0] * 1e6), "wall_us": round(wall * 1e6)}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])))
EOF

# --- Junction: uncached, cached (memory backend), and the slow cached route ------------
cat >"$WORK/junction.yaml" <<EOF
listen: 127.0.0.1:$J_PORT
admin: { listen: 127.0.0.1:$J_ADMIN }
queue: { backend: embedded, path: $WORK/queue }
cache: { backend: memory, max_entries: 100000, max_bytes: 256MiB }
upstreams:
  api: { url: "http://127.0.0.1:$UP_PORT" }
  slow: { url: "http://127.0.0.1:$SLOW_PORT", timeout: 10s, max_concurrency: 2000 }
routes:
  - name: product
    match: { method: GET, path: /products/{id} }
    upstream: api
  - name: product-cached
    match: { method: GET, path: /cached/products/{id} }
    upstream: api
    path: /products/{id}
    cache: { ttl: 300s }
  - name: slow-cached
    match: { method: GET, path: /slow/{id} }
    upstream: slow
    cache: { ttl: 300s }
EOF
start_junction "$WORK/junction.yaml" "$WORK/junction.log" "$J_ADMIN"
J_PID=$JUNCTION_PID

# Sanity: every path answers 200 with the upstream's body; caches report hits after one call.
for url in "http://127.0.0.1:$UP_PORT/products/42" "http://127.0.0.1:$J_PORT/products/42" \
    "http://127.0.0.1:$J_PORT/cached/products/42" "http://127.0.0.1:$NGC_PORT/products/42"; do
    body=$(curl -fsS "$url") || die "$url did not answer 200"
    [ "$body" = "$BODY" ] || die "$url answered: $body"
done
hdr=$(curl -fsS -D - -o /dev/null "http://127.0.0.1:$J_PORT/cached/products/42" | tr -d '\r' | awk -F': ' 'tolower($1) == "x-junction-cache" {print $2}')
[ "$hdr" = HIT ] || die "junction cached route answered x-junction-cache: '$hdr' on the second call"
hdr=$(curl -fsS -D - -o /dev/null "http://127.0.0.1:$NGC_PORT/products/42" | tr -d '\r' | awk -F': ' 'tolower($1) == "x-cache-status" {print $2}')
[ "$hdr" = HIT ] || die "nginx proxy_cache answered X-Cache-Status: '$hdr' on the second call"

# measure LABEL URL CONNS THREADS DURATION -> appends a row to $RESULTS
measure() {
    local label="$1" url="$2" conns="$3" threads="$4" dur="$5" json load busy
    load=$(wait_no_other_wrk)
    QUIET_WAIT="$QUIET_MAX" wait_quiet
    busy=$(cpu_busy_pct)
    if [ "$WARMUP" -gt 0 ] && [ "$conns" -gt 1 ]; then
        run_wrk "cache-$label.warmup" "$WARMUP" "$conns" "$threads" "$url" >/dev/null
    fi
    log "measuring $label: ${dur}s, $conns connections, $threads threads (load $load, ${busy}% busy before)"
    json=$(run_wrk "cache-$label" "$dur" "$conns" "$threads" "$url")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$conns" \
        "$(json_get "$json" rps)" "$(json_get "$json" p50_us)" "$(json_get "$json" p99_us)" "$(json_get "$json" max_us)" \
        "$(json_get "$json" non2xx)" "$(json_get "$json" socket_errors)" "$(json_get "$json" requests)" "$load" "$busy" >>"$RESULTS"
}

HITS0=$(metric_sum "$J_ADMIN" junction_cache_hits_total 'product-cached')
MISS0=$(metric_sum "$J_ADMIN" junction_cache_misses_total 'product-cached')
printf 'target\tconns\treq_per_s\tp50_us\tp99_us\tmax_us\tnon_2xx\tsocket_errors\trequests\tload1_before\tbusy_pct_before\n' >"$RESULTS"
# Direct and Junction rows interleaved around the peer, so host drift shows up.
measure "d-direct-upstream" "http://127.0.0.1:$UP_PORT/products/42" "$CONNS" "$THREADS" "$DURATION"
measure "a-junction-uncached" "http://127.0.0.1:$J_PORT/products/42" "$CONNS" "$THREADS" "$DURATION"
measure "b-junction-cached-hit" "http://127.0.0.1:$J_PORT/cached/products/42" "$CONNS" "$THREADS" "$DURATION"
measure "c-nginx-proxy_cache-hit" "http://127.0.0.1:$NGC_PORT/products/42" "$CONNS" "$THREADS" "$DURATION"
measure "d2-direct-upstream" "http://127.0.0.1:$UP_PORT/products/42" "$CONNS" "$THREADS" "$DURATION"
measure "b2-junction-cached-hit" "http://127.0.0.1:$J_PORT/cached/products/42" "$CONNS" "$THREADS" "$DURATION"

# Open loop: the same targets at fixed request rates below saturation (oha -q), so
# p99 shows what a hit costs under load rather than how long the run queue is.
# open_loop LABEL URL RATE -> appends a row to $OPEN_RESULTS
OPEN_RESULTS="$OUT_DIR/cache-open.tsv"
open_loop() {
    local label="$1" url="$2" rate="$3" json
    wait_no_other_wrk >/dev/null
    QUIET_WAIT="$QUIET_MAX" wait_quiet
    run_oha "cache-open-$label-$rate.warmup" 2 "$CONNS" "$rate" "$url" >/dev/null
    log "open loop $label: ${OPEN_DURATION}s at $rate req/s on $CONNS connections"
    json=$(run_oha "cache-open-$label-$rate" "$OPEN_DURATION" "$CONNS" "$rate" "$url")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$rate" "$(json_get "$json" rps)" "$(json_get "$json" p50_us)" \
        "$(json_get "$json" p99_us)" "$(json_get "$json" p999_us)" "$(( $(json_get "$json" non2xx) + $(json_get "$json" errors) ))" >>"$OPEN_RESULTS"
}
printf 'target\trate\treq_per_s\tp50_us\tp99_us\tp999_us\tfailed\n' >"$OPEN_RESULTS"
for rate in $OPEN_RATES; do
    open_loop "d-direct-upstream" "http://127.0.0.1:$UP_PORT/products/42" "$rate"
    open_loop "b-junction-cached-hit" "http://127.0.0.1:$J_PORT/cached/products/42" "$rate"
    open_loop "c-nginx-proxy_cache-hit" "http://127.0.0.1:$NGC_PORT/products/42" "$rate"
done

# 1 connection, everything pinned to CPU 0 (see sync-proxy.sh for why).
pin_all 0
WRK_CMD="taskset -c 0 wrk"
measure "c1-direct-upstream" "http://127.0.0.1:$UP_PORT/products/42" 1 1 "$C1_DURATION"
measure "c1-junction-uncached" "http://127.0.0.1:$J_PORT/products/42" 1 1 "$C1_DURATION"
measure "c1-junction-cached-hit" "http://127.0.0.1:$J_PORT/cached/products/42" 1 1 "$C1_DURATION"
measure "c1-nginx-proxy_cache-hit" "http://127.0.0.1:$NGC_PORT/products/42" 1 1 "$C1_DURATION"
pin_all "0-$(($(nproc) - 1))"
WRK_CMD=wrk
HITS1=$(metric_sum "$J_ADMIN" junction_cache_hits_total 'product-cached')
MISS1=$(metric_sum "$J_ADMIN" junction_cache_misses_total 'product-cached')

# --- (e) coalescing: COALESCE_N concurrent GETs on one cold key ------------------------
COALESCE_LOAD=$(wait_no_other_wrk); QUIET_WAIT="$QUIET_MAX" wait_quiet
log "coalescing: $COALESCE_N concurrent GETs on a cold key, upstream sleeps ${SLOW_MS} ms (load $COALESCE_LOAD)"
SLOW_BEFORE=$(cat "$WORK/slow-count")
python3 "$WORK/coalesce_client.py" "127.0.0.1" "$J_PORT" "/slow/7" "$COALESCE_N" >"$WORK/coalesce.json" ||
    die "coalescing client failed"
sleep 0.5
SLOW_AFTER=$(cat "$WORK/slow-count")
COALESCE_JSON=$(cat "$WORK/coalesce.json")
UPSTREAM_CALLS=$((SLOW_AFTER - SLOW_BEFORE))

# --- (f) projection (criterion) -------------------------------------------------------
# The repo's bench first. Its body generator asserts 90-120 KB; when that assertion
# fails (it built 80,949 bytes at 51750c1) the same benchmark is run out of tree with
# enough items for >= 100,000 bytes, against the same junction-cache crate and
# Cargo.lock, and both outcomes are reported.
PROJ_LINES="(skipped: SKIP_PROJECTION=1)"
if [ "${SKIP_PROJECTION:-0}" != 1 ]; then
    # Compile first (slow in the bench profile), then measure on a quiet machine.
    (cd "$REPO_DIR" && cargo bench -q -p junction-cache --bench projection --no-run) >"$WORK/projection.build.log" 2>&1 ||
        { cat "$WORK/projection.build.log" >&2; die "projection bench build failed"; }
    PROJ_LOAD=$(wait_no_other_wrk); QUIET_WAIT="$QUIET_MAX" wait_quiet
    log "projection bench (criterion), load $PROJ_LOAD"
    if (cd "$REPO_DIR" && cargo bench -p junction-cache --bench projection -- --noplot) >"$WORK/projection.txt" 2>&1; then
        PROJ_LINES="cargo bench -p junction-cache --bench projection (repo bench, unchanged):
$(grep -E '^projection/|time:|thrpt:' "$WORK/projection.txt" | sed 's/^ *//')
(load average before: $PROJ_LOAD)"
    else
        PROJ_LINES="cargo bench -p junction-cache --bench projection (repo bench) FAILED: $(grep -m1 -E 'body is|panicked|error' "$WORK/projection.txt")"
        log "repo projection bench failed; running the same benchmark out of tree with a >= 100,000-byte body"
        PB="$WORK/projbench"
        mkdir -p "$PB/benches"
        cp "$REPO_DIR/Cargo.lock" "$PB/Cargo.lock"
        cat >"$PB/Cargo.toml" <<EOF
[package]
name = "cache-projection-bench"
version = "0.0.0"
edition = "2021"
publish = false

[workspace]

[dependencies]
junction-cache = { path = "$REPO_DIR/crates/junction-cache" }
serde_json = "1"

[dev-dependencies]
criterion = "0.5"

[[bench]]
name = "projection"
harness = false
EOF
        # Same body shape, fields and functions as crates/junction-cache/benches/projection.rs;
        # only the item count grows until the body is at least 100,000 bytes.
        sed -e 's/(0\.\.230)/(0..n)/' \
            -e 's/^fn body() -> Vec<u8> {/fn body_of(n: usize) -> Vec<u8> {/' \
            -e '/assert!(/,/);/d' \
            "$REPO_DIR/crates/junction-cache/benches/projection.rs" >"$PB/benches/projection.rs"
        cat >>"$PB/benches/projection.rs" <<'EOF'

/// The smallest body of this shape that is at least 100,000 bytes.
fn body() -> Vec<u8> {
    let mut n = 230;
    loop {
        let b = body_of(n);
        if b.len() >= 100_000 {
            eprintln!("body: {} items, {} bytes", n, b.len());
            return b;
        }
        n += 1;
    }
}
EOF
        (cd "$PB" && cargo bench -q --bench projection --no-run) >"$WORK/projbench.build.log" 2>&1 ||
            { cat "$WORK/projbench.build.log" >&2; die "out-of-tree projection bench build failed"; }
        PROJ_LOAD=$(wait_no_other_wrk); QUIET_WAIT="$QUIET_MAX" wait_quiet
        (cd "$PB" && cargo bench --bench projection -- --noplot) >"$WORK/projbench.txt" 2>&1 ||
            { cat "$WORK/projbench.txt" >&2; die "out-of-tree projection bench failed"; }
        PROJ_LINES="$PROJ_LINES
out of tree (bench/out/cache/projbench, same code, body grown to >= 100,000 bytes):
$(grep -E '^body:|^projection/|time:|thrpt:' "$WORK/projbench.txt" | sed 's/^ *//')
(load average before: $PROJ_LOAD)"
    fi
fi

{
    cat "$OUT_DIR/cache.machine.txt"
    echo "== cache: ${THREADS} wrk threads, ${CONNS} connections, ${DURATION}s after ${WARMUP}s warm-up; c1 rows: 1 connection, ${C1_DURATION}s, all pinned to CPU 0 =="
    echo "upstream: nginx 'return 200' (49-byte JSON body) on 127.0.0.1:$UP_PORT; Junction memory cache backend, ttl 300s"
    echo "peer: nginx proxy_cache (proxy_cache_valid 200 5m, keepalive 64 upstream pool, cache dir on $(df -T "$WORK" | awk 'NR==2 {print $2}'))"
    echo "load1_before / busy_pct_before: 1-min load average and CPU busy % in the second before each run (other work on this host)"
    echo
    column -t -s $'\t' "$RESULTS"
    echo
    echo "junction cached route during the runs: $((HITS1 - HITS0)) hits, $((MISS1 - MISS0)) misses (0 misses = all hits)"
    awk -F'\t' '
        $1 ~ /^d2?-direct-upstream$/ { dp50 += $4; dp99 += $5; nd++ }
        $1 ~ /^b2?-junction-cached-hit$/ { bp50 += $4; bp99 += $5; bq += $3; nb++ }
        $1 == "a-junction-uncached" { ap50 = $4; ap99 = $5; aq = $3 }
        $1 == "c-nginx-proxy_cache-hit" { cp50 = $4; cp99 = $5; cq = $3 }
        $1 == "c1-direct-upstream" { c1d50 = $4; c1d99 = $5 }
        $1 == "c1-junction-cached-hit" { c1b50 = $4; c1b99 = $5 }
        $1 == "c1-junction-uncached" { c1a50 = $4; c1a99 = $5 }
        $1 == "c1-nginx-proxy_cache-hit" { c1c50 = $4; c1c99 = $5 }
        END {
            dp50 /= nd; dp99 /= nd; bp50 /= nb; bp99 /= nb; bq /= nb
            printf "under load (%s conns), means of 2 runs for direct and cached:\n", "'"$CONNS"'"
            printf "  cache hit added over a direct hit: p50 %+.0f us, p99 %+.0f us   (target: p99 < 100 us)\n", bp50 - dp50, bp99 - dp99
            printf "  nginx proxy_cache hit added over a direct hit: p50 %+.0f us, p99 %+.0f us\n", cp50 - dp50, cp99 - dp99
            printf "  junction cached hit vs nginx proxy_cache hit: %.0f vs %.0f req/s (%.2fx); p99 %.0f vs %d us\n", bq, cq, bq / cq, bp99, cp99
            printf "  junction cached hit vs junction uncached: %.0f vs %.0f req/s; p99 %.0f vs %d us\n", bq, aq, bp99, ap99
            printf "1 connection, pinned to CPU 0:\n"
            printf "  cache hit added over a direct hit: p50 %+d us, p99 %+d us; uncached proxy added p50 %+d us, p99 %+d us; nginx proxy_cache hit added p50 %+d us, p99 %+d us\n", c1b50 - c1d50, c1b99 - c1d99, c1a50 - c1d50, c1a99 - c1d99, c1c50 - c1d50, c1c99 - c1d99
        }' "$RESULTS"
    echo
    echo "== open loop: oha at fixed rates, $CONNS connections, ${OPEN_DURATION}s per row after a 2 s warm-up =="
    column -t -s $'\t' "$OPEN_RESULTS"
    awk -F'\t' 'NR > 1 { p99[$1 "@" $2] = $5; p50[$1 "@" $2] = $4; rates[$2] = 1 }
        END { for (r in rates) printf "  at %s req/s: cache hit added over a direct hit p50 %+d us, p99 %+d us (target: p99 < 100 us); nginx proxy_cache hit added p99 %+d us\n",
              r, p50["b-junction-cached-hit@" r] - p50["d-direct-upstream@" r], p99["b-junction-cached-hit@" r] - p99["d-direct-upstream@" r],
              p99["c-nginx-proxy_cache-hit@" r] - p99["d-direct-upstream@" r] }' "$OPEN_RESULTS" | sort -t' ' -k4 -n
    echo
    echo "== coalescing: $COALESCE_N clients connected first, then all sent GET /slow/7 (one cold key) at once; upstream sleeps ${SLOW_MS} ms =="
    echo "load average before: $COALESCE_LOAD"
    echo "upstream calls: $UPSTREAM_CALLS   (target: 1)"
    echo "callers: $COALESCE_JSON"
    echo
    echo "== projection: cargo bench -p junction-cache --bench projection (~100 KB JSON body -> fields total,items.id,items.price.amount) =="
    echo "$PROJ_LINES"
} | tee "$OUT_DIR/cache.txt"
