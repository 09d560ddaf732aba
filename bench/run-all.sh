#!/usr/bin/env bash
# Runs every benchmark in turn and prints their result tables.
#
# Full logs: bench/out/<name>.log; result tables: bench/out/<name>.txt;
# raw wrk output and timelines: bench/out/<name>/ and bench/out/*.wrk.txt.
# Same environment knobs as the individual scripts (JUNCTION_REF, CONNS, ...).
source "$(dirname "$0")/lib.sh"

machine_info | tee "$OUT_DIR/machine.txt"
status=0
for name in sync-proxy async-enqueue pending-memory; do
    log "running bench/$name.sh (log: $OUT_DIR/$name.log)"
    if ! bash "$BENCH_DIR/$name.sh" >"$OUT_DIR/$name.log" 2>&1; then
        log "bench/$name.sh FAILED; last lines of its log:"
        tail -20 "$OUT_DIR/$name.log" >&2
        status=1
    fi
    sleep 3 # let sockets in TIME_WAIT and the page cache settle between benchmarks
done
echo
for name in sync-proxy async-enqueue pending-memory; do
    [ -f "$OUT_DIR/$name.txt" ] && { cat "$OUT_DIR/$name.txt"; echo; }
done
exit "$status"
