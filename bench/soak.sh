#!/usr/bin/env bash
# Soak: mixed traffic through one Junction for MINUTES (10), loopback only,
# bounded in time. Every SLICE seconds (30) it records Junction's RSS and open
# file descriptors, each traffic class's p50/p99 and failures over that slice,
# and the queue's backlog; at the end it checks that every accepted event was
# delivered, prints a table, and writes soak.csv, soak.md and soak.svg (RSS and
# p99 over time, gnuplot) to bench/out/.
#
# Traffic (open loop, oha at fixed rates, one process each):
#   sync    GET /items         proxied to an nginx JSON upstream    SYNC_RATE/s   (200)
#   cached  GET /products/{id} cache ttl 2s, one id per slice    CACHED_RATE/s (300)
#                              (a fill every 2 s, hits between)
#   async   POST /orders       202, delivered to an nginx subscriber ASYNC_RATE/s (100)
#   failing GET /vendor        an upstream answering 503: breaker   FAIL_RATE/s   (20)
#
# Env: MINUTES (10), SLICE (30), the rates above, BENCH_PORT_BASE (18600).
# What a healthy run shows: RSS and fds flat after warm-up (no leak), p99 of
# each class without drift, no failures but the failing route's 503s, and
# accepted == delivered.
source "$(dirname "$0")/lib.sh"

MINUTES="${MINUTES:-10}"
SLICE="${SLICE:-30}"
SYNC_RATE="${SYNC_RATE:-200}"
CACHED_RATE="${CACHED_RATE:-300}"
ASYNC_RATE="${ASYNC_RATE:-100}"
FAIL_RATE="${FAIL_RATE:-20}"
BASE_PORT="${BENCH_PORT_BASE:-18600}"
UP_PORT=$((BASE_PORT + 1)) FAIL_PORT=$((BASE_PORT + 2)) J_PORT=$((BASE_PORT + 3)) J_ADMIN=$((BASE_PORT + 4))
WORK="$OUT_DIR/soak"
SLICES=$(( MINUTES * 60 / SLICE ))
[ "$SLICES" -ge 1 ] || die "MINUTES * 60 must be at least SLICE"

ensure_tool nginx nginx-light
ensure_tool jq jq
ensure_tool curl curl
ensure_tool gnuplot gnuplot-nox
ensure_oha
rm -rf "$WORK" && mkdir -p "$WORK"
for p in $UP_PORT $FAIL_PORT $J_PORT $J_ADMIN; do require_free_port "$p"; done
machine_info
build_junction
commit=$(git -C "$REPO_DIR" rev-parse --short HEAD)

start_json_upstream "$WORK/up" "$UP_PORT" '{"id":42,"name":"widget","price":19.99,"stock":7}'
write_nginx_conf "$WORK/fail" 1 <<EOF
    server {
        listen 127.0.0.1:$FAIL_PORT;
        default_type application/json;
        location / { return 503 '{"error":"vendor down"}'; }
    }
EOF
start_nginx "$WORK/fail" "$FAIL_PORT"

cat >"$WORK/junction.yaml" <<EOF
listen: 127.0.0.1:$J_PORT
admin: { listen: 127.0.0.1:$J_ADMIN }
queue: { backend: embedded, path: $WORK/queue }
upstreams:
  up: { url: "http://127.0.0.1:$UP_PORT", timeout: 2s }
  vendor: { url: "http://127.0.0.1:$FAIL_PORT", timeout: 2s }
routes:
  - { name: items, match: { method: GET, path: /items }, upstream: up }
  - name: products
    match: { method: GET, path: "/products/{id}" }
    upstream: up
    cache: { ttl: 2s }
  - { name: vendor, match: { method: GET, path: /vendor }, upstream: vendor }
  - name: orders
    match: { method: POST, path: /orders }
    async:
      topic: orders
      subscribers:
        - { name: fulfillment, upstream: up, path: /hook }
EOF
start_junction "$WORK/junction.yaml" "$WORK/junction.log" "$J_ADMIN"
log "soak: $MINUTES min in $SLICES slices of ${SLICE}s, commit $commit"

# oha SLICE seconds at RATE; its JSON summary to FILE. load FILE RATE URL [oha args]
load() {
    local file="$1" rate="$2" url="$3"; shift 3
    oha -z "${SLICE}s" -c 16 -q "$rate" --no-tui --output-format json "$@" "$url" >"$file" 2>"$file.err"
}

CSV="$OUT_DIR/soak.csv"
echo "minute,rss_mib,fds,sync_p50_ms,sync_p99_ms,cached_p99_ms,async_p99_ms,fail_p99_ms,sync_failures,cached_failures,async_failures,fail_not_503,queue_depth" >"$CSV"
accepted=0
for i in $(seq 1 "$SLICES"); do
    load "$WORK/sync.json" "$SYNC_RATE" "http://127.0.0.1:$J_PORT/items" &
    a=$!
    load "$WORK/cached.json" "$CACHED_RATE" "http://127.0.0.1:$J_PORT/products/$((i % 50))" &
    b=$!
    load "$WORK/async.json" "$ASYNC_RATE" "http://127.0.0.1:$J_PORT/orders" -m POST \
        -H 'content-type: application/json' -d '{"orderId":"o-1","lines":[{"sku":"A-1","qty":2}]}' &
    c=$!
    load "$WORK/fail.json" "$FAIL_RATE" "http://127.0.0.1:$J_PORT/vendor" &
    d=$!
    wait "$a" "$b" "$c" "$d" || die "oha failed: $(cat "$WORK"/*.json.err)"
    kill -0 "$JUNCTION_PID" 2>/dev/null || die "junction exited: $(tail -5 "$WORK/junction.log")"
    rss=$(kib_to_mib "$(rss_kib "$JUNCTION_PID")")
    fds=$(ls "/proc/$JUNCTION_PID/fd" | wc -l)
    read -r s50 s99 sfail _ <<<"$(oha_summary "$WORK/sync.json" 200)"
    read -r _ c99 cfail _ <<<"$(oha_summary "$WORK/cached.json" 200)"
    read -r _ a99 afail aok <<<"$(oha_summary "$WORK/async.json" 202)"
    # The failing route answers 503 (the vendor's, then the breaker's): anything else counts.
    read -r _ f99 fother _ <<<"$(oha_summary "$WORK/fail.json" 503)"
    [ "$fother" = 0 ] || log "failing route answered: $(jq -c .statusCodeDistribution "$WORK/fail.json")"
    accepted=$((accepted + aok))
    depth=$(metric_sum "$J_ADMIN" junction_queue_depth)
    minute=$(awk -v i="$i" -v s="$SLICE" 'BEGIN {printf "%.1f", i * s / 60}')
    row="$minute,$rss,$fds,$s50,$s99,$c99,$a99,$f99,$sfail,$cfail,$afail,$fother,$depth"
    echo "$row" >>"$CSV"
    log "[$i/$SLICES] ${minute} min: rss ${rss} MiB, fds $fds, p99 sync ${s99} cached ${c99} async ${a99} ms, failures $sfail/$cfail/$afail, backlog $depth"
done

# Every accepted event delivered: wait (bounded) for the backlog to empty.
for _ in $(seq 1 600); do
    [ "$(metric_sum "$J_ADMIN" junction_queue_depth)" = 0 ] && break
    sleep 0.1
done
delivered=$(metric_sum "$J_ADMIN" junction_deliveries_total 'outcome="delivered"')
dead=$(metric_sum "$J_ADMIN" junction_dlq_depth)

gnuplot <<EOF
set terminal svg size 900,600 dynamic font "sans,11"
set output "$OUT_DIR/soak.svg"
set datafile separator ","
set key outside bottom center horizontal
set multiplot layout 2,1 title "Junction soak, commit $commit: ${MINUTES} min of mixed traffic"
set ylabel "MiB / count"
set xlabel "minute"
plot "$CSV" using 1:2 with linespoints title "RSS (MiB)", "$CSV" using 1:3 with linespoints title "open fds"
set ylabel "p99 (ms)"
plot "$CSV" using 1:5 with linespoints title "sync", "$CSV" using 1:6 with linespoints title "cached", \
     "$CSV" using 1:7 with linespoints title "async accept", "$CSV" using 1:8 with linespoints title "failing route"
unset multiplot
EOF

{
    echo "Soak at commit $commit, $(date -u +%Y-%m-%d): ${MINUTES} min, slices of ${SLICE}s; rates/s sync $SYNC_RATE, cached $CACHED_RATE, async $ASYNC_RATE, failing $FAIL_RATE (\`MINUTES=$MINUTES bash bench/soak.sh\`)."
    echo
    echo "| minute | RSS MiB | fds | sync p50 / p99 ms | cached p99 ms | async p99 ms | failing p99 ms | failures sync / cached / async | failing route not 503 | backlog |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    tail -n +2 "$CSV" | awk -F, '{printf "| %s | %s | %s | %.2f / %.2f | %.2f | %.2f | %.2f | %s / %s / %s | %s | %s |\n", $1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13}'
    echo
    echo "Accepted events (202s the load generator saw): $accepted; delivered: $delivered (more when an event was"
    echo "accepted as a slice ended and oha stopped waiting for its 202); dead-lettered: $dead."
} | tee "$OUT_DIR/soak.md"
[ "$delivered" -ge "$accepted" ] || die "accepted $accepted but delivered $delivered"
log "wrote $CSV, $OUT_DIR/soak.md and $OUT_DIR/soak.svg"
