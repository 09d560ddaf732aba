#!/usr/bin/env bash
# Sync proxy throughput and latency: Junction against nginx and HAProxy, same run, same upstream.
#
# Upstream: nginx answering `return 200` with a 49-byte JSON body (no disk, no
# logging). Measured direct first, so the table shows what it can do alone.
# Then each proxy in front of it: (a) direct, (b) nginx reverse proxy with a
# keep-alive upstream pool, (c) HAProxy http mode with keep-alive and
# connection reuse, (d) Junction with a bare upstream (no retry; the breaker is
# always on), (e) Junction with breaker + retry configured (d and e interleaved,
# twice each). Junction runs with
# RUST_LOG=warn so no per-request log line is written.
#
# Reference rows (f, g): bench/hyper-floor, the smallest hyper proxy, once on one
# multi-thread runtime (Junction's shape) and once thread-per-core (2 current-thread
# runtimes on SO_REUSEPORT listeners), to separate the stack's cost from Junction's.
#
# Then the policy-stack cost at low load (1 connection, so queueing does not
# hide it): p50 of bare vs retry+breaker config, interleaved twice.
#
# Env: THREADS CONNS DURATION WARMUP (2 64 10 3), C1_DURATION (5), BENCH_PORT_BASE (18000).
source "$(dirname "$0")/lib.sh"

BASE="${BENCH_PORT_BASE:-18000}"
UP_PORT=$((BASE + 1)) NGX_PORT=$((BASE + 2)) HAP_PORT=$((BASE + 3))
JB_PORT=$((BASE + 4)) JB_ADMIN=$((BASE + 14)) JP_PORT=$((BASE + 5)) JP_ADMIN=$((BASE + 15))
HF_MT_PORT=$((BASE + 6)) HF_TPC_PORT=$((BASE + 7))
C1_DURATION="${C1_DURATION:-5}"
WORK="$OUT_DIR/sync-proxy"
RESULTS="$OUT_DIR/sync-proxy.tsv"
PATH_Q="/products/42"

ensure_tool wrk wrk
ensure_tool nginx nginx-light
ensure_tool haproxy haproxy
ensure_tool jq jq
ensure_tool curl curl
machine_info
build_junction
log "building bench/hyper-floor (release)"
(cd "$BENCH_DIR/hyper-floor" && cargo build --release -q) || die "hyper-floor build failed"
rm -rf "$WORK" && mkdir -p "$WORK"
for p in $UP_PORT $NGX_PORT $HAP_PORT $JB_PORT $JB_ADMIN $JP_PORT $JP_ADMIN $HF_MT_PORT $HF_TPC_PORT; do require_free_port "$p"; done

# --- upstream: nginx `return 200` -------------------------------------------
start_json_upstream "$WORK/upstream" "$UP_PORT" '{"id":42,"name":"widget","price":19.99,"stock":7}'

# --- (b) nginx reverse proxy --------------------------------------------------
mkdir -p "$WORK/nginx-proxy"
write_nginx_conf "$WORK/nginx-proxy" auto <<EOF
    upstream api {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;
        keepalive_requests 10000000;
    }
    server {
        listen 127.0.0.1:$NGX_PORT;
        location / {
            proxy_pass http://api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
EOF
start_nginx "$WORK/nginx-proxy" "$NGX_PORT"
NGX_PROXY_PID=$NGINX_PID

# --- (c) HAProxy ----------------------------------------------------------------
cat >"$WORK/haproxy.cfg" <<EOF
global
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:$HAP_PORT
    default_backend be
backend be
    server up1 127.0.0.1:$UP_PORT
EOF
haproxy -f "$WORK/haproxy.cfg" -db 2>"$WORK/haproxy.log" &
HAP_PID=$!
STARTED_PIDS+=("$HAP_PID")
wait_port "$HAP_PORT"

# --- (d, e) Junction: bare and with retry + breaker -------------------------------
cat >"$WORK/junction-bare.yaml" <<EOF
listen: 127.0.0.1:$JB_PORT
admin: { listen: 127.0.0.1:$JB_ADMIN }
queue: { backend: embedded, path: $WORK/q-bare }
upstreams:
  api: { url: "http://127.0.0.1:$UP_PORT" }
routes:
  - name: product
    match: { method: GET, path: /products/{id} }
    upstream: api
EOF
cat >"$WORK/junction-policy.yaml" <<EOF
listen: 127.0.0.1:$JP_PORT
admin: { listen: 127.0.0.1:$JP_ADMIN }
queue: { backend: embedded, path: $WORK/q-policy }
upstreams:
  api:
    url: "http://127.0.0.1:$UP_PORT"
    timeout: 3s
    max_concurrency: 256
    retry: { attempts: 3, backoff: 100ms, max_backoff: 2s }
    breaker: { error_threshold_percentage: 50, min_requests: 20, window: 10s, reset_timeout: 10s }
routes:
  - name: product
    match: { method: GET, path: /products/{id} }
    upstream: api
EOF
start_junction "$WORK/junction-bare.yaml" "$WORK/junction-bare.log" "$JB_ADMIN"
JB_PID=$JUNCTION_PID
start_junction "$WORK/junction-policy.yaml" "$WORK/junction-policy.log" "$JP_ADMIN"
JP_PID=$JUNCTION_PID
"$CARGO_TARGET_DIR/release/hyper-floor" "127.0.0.1:$HF_MT_PORT" "http://127.0.0.1:$UP_PORT" mt 2>"$WORK/hyper-floor-mt.log" &
HF_MT_PID=$!
STARTED_PIDS+=("$HF_MT_PID")
"$CARGO_TARGET_DIR/release/hyper-floor" "127.0.0.1:$HF_TPC_PORT" "http://127.0.0.1:$UP_PORT" tpc "$(nproc)" 2>"$WORK/hyper-floor-tpc.log" &
HF_TPC_PID=$!
STARTED_PIDS+=("$HF_TPC_PID")
wait_port "$HF_MT_PORT"; wait_port "$HF_TPC_PORT"
sleep 1
JB_IDLE_KIB=$(rss_kib "$JB_PID")
JP_IDLE_KIB=$(rss_kib "$JP_PID")
log "junction idle RSS: bare $(kib_to_mib "$JB_IDLE_KIB") MiB, policy $(kib_to_mib "$JP_IDLE_KIB") MiB"

# Sanity: every target answers 200 with the upstream's body.
for port in $UP_PORT $NGX_PORT $HAP_PORT $JB_PORT $JP_PORT $HF_MT_PORT $HF_TPC_PORT; do
    body=$(curl -fsS "http://127.0.0.1:$port$PATH_Q") || die "port $port did not answer 200"
    [ "$body" = '{"id":42,"name":"widget","price":19.99,"stock":7}' ] || die "port $port answered: $body"
done

# Sum of RSS (KiB) over a process and its children (nginx master + workers).
tree_rss_kib() {
    local pid="$1" total c
    total=$(rss_kib "$pid")
    for c in $(pgrep -P "$pid" || true); do total=$((total + $(rss_kib "$c" 2>/dev/null || echo 0))); done
    echo "$total"
}

# Samples the peak tree RSS of PID every 0.5 s while wrk runs; prints KiB.
# measure LABEL PORT PID CONNS THREADS DURATION -> appends a row to $RESULTS
measure() {
    local label="$1" port="$2" pid="$3" conns="$4" threads="$5" dur="$6" json peak=0 r
    wait_quiet
    if [ "$WARMUP" -gt 0 ] && [ "$conns" -gt 1 ]; then
        run_wrk "$label.warmup" "$WARMUP" "$conns" "$threads" "http://127.0.0.1:$port$PATH_Q" >/dev/null
    fi
    log "measuring $label: ${dur}s, $conns connections, $threads threads"
    run_wrk "$label" "$dur" "$conns" "$threads" "http://127.0.0.1:$port$PATH_Q" >"$WORK/$label.json" &
    local wrk_pid=$!
    while kill -0 "$wrk_pid" 2>/dev/null; do
        if [ -n "$pid" ]; then
            r=$(tree_rss_kib "$pid")
            [ "$r" -gt "$peak" ] && peak=$r
        fi
        sleep 0.5
    done
    wait "$wrk_pid" || die "wrk failed for $label"
    json=$(cat "$WORK/$label.json")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$conns" \
        "$(json_get "$json" rps)" "$(json_get "$json" p50_us)" "$(json_get "$json" p99_us)" \
        "$(json_get "$json" non2xx)" "$(json_get "$json" socket_errors)" \
        "$([ -n "$pid" ] && kib_to_mib "$peak" || echo -)" "$(json_get "$json" requests)" >>"$RESULTS"
}

printf 'target\tconns\treq_per_s\tp50_us\tp99_us\tnon_2xx\tsocket_errors\tpeak_rss_mib\trequests\n' >"$RESULTS"
measure "a-direct" "$UP_PORT" "" "$CONNS" "$THREADS" "$DURATION"
measure "b-nginx-proxy" "$NGX_PORT" "$NGX_PROXY_PID" "$CONNS" "$THREADS" "$DURATION"
measure "c-haproxy" "$HAP_PORT" "$HAP_PID" "$CONNS" "$THREADS" "$DURATION"
# Junction's two configs interleaved, twice, so drift on the host does not pass for a difference.
for round in 1 2; do
    measure "d-junction-bare-$round" "$JB_PORT" "$JB_PID" "$CONNS" "$THREADS" "$DURATION"
    measure "e-junction-retry-breaker-$round" "$JP_PORT" "$JP_PID" "$CONNS" "$THREADS" "$DURATION"
done
JB_HWM_KIB=$(hwm_kib "$JB_PID")
measure "f-ref-hyper-floor-mt" "$HF_MT_PORT" "$HF_MT_PID" "$CONNS" "$THREADS" "$DURATION"
measure "g-ref-hyper-floor-tpc" "$HF_TPC_PORT" "$HF_TPC_PID" "$CONNS" "$THREADS" "$DURATION"

# Low-load latency (1 connection): what one request costs through each path.
# Every server and wrk are pinned to CPU 0 for these runs: with one request in
# flight, unpinned processes hop between vCPUs and each wake-up of an idle vCPU
# costs tens of microseconds on a VM, which would swamp the cost of the code.
ALL_CPUS="0-$(($(nproc) - 1))"
pin_all 0
WRK_CMD="taskset -c 0 wrk"
log "low-load latency runs (1 connection, ${C1_DURATION}s each, all pinned to CPU 0)"
measure "c1-direct" "$UP_PORT" "" 1 1 "$C1_DURATION"
measure "c1-nginx-proxy" "$NGX_PORT" "$NGX_PROXY_PID" 1 1 "$C1_DURATION"
for round in 1 2; do
    measure "c1-junction-bare-$round" "$JB_PORT" "$JB_PID" 1 1 "$C1_DURATION"
    measure "c1-junction-retry-breaker-$round" "$JP_PORT" "$JP_PID" 1 1 "$C1_DURATION"
done

pin_all "$ALL_CPUS"
WRK_CMD=wrk

# Retries must not have fired (a fair comparison needs every call to succeed first time).
RETRIES=$(metric_sum "$JP_ADMIN" junction_upstream_retries_total)

{
    echo "== sync proxy: ${THREADS} wrk threads, ${CONNS} connections, ${DURATION}s after ${WARMUP}s warm-up; GET $PATH_Q =="
    echo "upstream: nginx 'return 200' (49-byte JSON body), worker_processes auto, shared by every target"
    echo "f/g are references, not products: the smallest hyper proxy (bench/hyper-floor), multi-thread vs thread-per-core"
    echo
    column -t -s $'\t' "$RESULTS"
    echo
    awk -F'\t' '
        $1 == "b-nginx-proxy" { n = $3; np99 = $5 }
        $1 ~ /^d-junction-bare-/ { j += $3; jp99 += $5; nj++ }
        $1 ~ /^e-junction-retry-breaker-/ { e += $3; ep50 += $4; ne++ }
        $1 ~ /^d-junction-bare-/ { dp50 += $4 }
        $1 ~ /^c1-junction-bare-/ { b += $4; nb++ }
        $1 ~ /^c1-junction-retry-breaker-/ { p += $4; np++ }
        $1 == "c1-direct" { d = $4 }
        $1 == "c1-nginx-proxy" { ng = $4 }
        END {
            j /= nj; jp99 /= nj; e /= ne
            printf "junction(bare, mean of 2) / nginx req/s: %.0f / %.0f = %.2fx   (target >= 1.20x)\n", j, n, j / n
            printf "p99 junction(bare, mean of 2) %d us vs nginx %d us   (target: no worse)\n", jp99, np99
            printf "64 connections, retry+breaker vs bare: %.0f vs %.0f req/s, p50 %.0f vs %.0f us (means of 2)\n", e, j, ep50 / ne, dp50 / nj
            printf "c=1 (pinned to one CPU) p50: direct %d us, nginx %d us, junction bare %.1f us, retry+breaker %.1f us (mean of 2 runs each)\n", d, ng, b / nb, p / np
            printf "policy stack added p50 (retry+breaker - bare, c=1 pinned): %.1f us   (target < 50 us)\n", p / np - b / nb
            printf "junction(bare) added p50 over direct (c=1 pinned): %.1f us; nginx added: %d us\n", b / nb - d, ng - d
        }' "$RESULTS"
    echo "junction RSS idle: bare $(kib_to_mib "$JB_IDLE_KIB") MiB, retry+breaker $(kib_to_mib "$JP_IDLE_KIB") MiB   (target < 64 MiB)"
    echo "junction(bare) RSS high-water mark after all runs (VmHWM): $(kib_to_mib "$JB_HWM_KIB") MiB"
    echo "retries fired on the retry+breaker config: $RETRIES (0 = every call succeeded first time)"
} | tee "$OUT_DIR/sync-proxy.txt"
