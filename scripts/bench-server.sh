#!/bin/bash
# Measures one op (or several, `put,get,health`, back to back) against fresh servers: ops/s, p99, and server CPU per op
# (utime+stime from /proc around the timed load, summed over the servers,
# read by `bench --server-pid`: the prefill of `get` is left out); with
# PG_OWNER set (the user the PostgreSQL server runs as), PostgreSQL's CPU
# per op too. With SERVERS=N (PostgreSQL only), N servers share the
# database, one root key and one shared directory (erasure keys, audit
# anchor, shred ledger), and the bench spreads its connections over them
# (--also-endpoint); `shred` then also times a shred on the first server
# to a read refused on the second. VALUE_SIZE (bytes, default 1024) and
# CONCURRENCY (default 64) change the load; RECORDS (default 10,000) is how
# many records `get` and `export` read from (fewer for large values:
# RECORDS=200 VALUE_SIZE=1048576 CONCURRENCY=8).
#
#   scripts/bench-server.sh target/release/strongbox put
#   PG_OWNER=nobody scripts/bench-server.sh target/release/strongbox get \
#       --database-url postgres://strongbox@127.0.0.1:55432/bench1
#   SERVERS=2 PG_OWNER=nobody scripts/bench-server.sh target/release/strongbox put \
#       --database-url postgres://strongbox@127.0.0.1:55432/bench2
#
# The database must exist and be empty.
set -euo pipefail
B=$(realpath "$1"); OP=$2; shift 2
N=${SERVERS:-1}
D=$(mktemp -d)
cd "$D"
mkdir shared
export BENCH_ROOT_KEY
BENCH_ROOT_KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$D"' EXIT
EPS=()
for i in $(seq "$N"); do
    mkdir "s$i"
    (cd "s$i" && exec "$B" serve --listen 127.0.0.1:0 --root-key-env BENCH_ROOT_KEY \
        --audit-anchor ../shared/audit.anchor --shred-ledger ../shared/shred.ledger \
        --config <(echo "erasure_keys = \"$D/shared/erasure.keys\"") "$@" > out.txt 2> err.txt) &
    PIDS+=($!)
    for _ in $(seq 100); do grep -q listening "s$i/out.txt" && break; sleep 0.1; done
    EPS+=("http://$(sed -n 's/listening on //p' "s$i/out.txt")")
done
KEY=$(cat s1/strongbox-data/operator.key)
ALSO=()
for ep in "${EPS[@]:1}"; do ALSO+=(--also-endpoint "$ep"); done
PGPIDS=()
if [ -n "${PG_OWNER:-}" ]; then
    for p in $(pgrep -u "$PG_OWNER" postgres); do PGPIDS+=(--database-pid "$p"); done
fi
CPU=()
for p in "${PIDS[@]}"; do CPU+=(--server-pid "$p"); done
bench() {
    "$B" --endpoint "${EPS[0]}" --api-key "$KEY" --json bench --op "$OP" --concurrency "${CONCURRENCY:-64}" \
        --value-size "${VALUE_SIZE:-1024}" --records "${RECORDS:-10000}" --duration "$1" "${ALSO[@]}" "${CPU[@]}" "${PGPIDS[@]}"
}
if [ "$OP" = shred ]; then
    bench 1s
    exit 0
fi
bench 2s >/dev/null
# The bench reads the processes' CPU time around its timed load alone.
bench 8s | python3 -c "
import sys, json
out = json.loads(sys.stdin.read())
for r in out.get('runs', [out]):
    line = '%s on $N server(s): %.0f ops/s, p99 %s ms, server CPU %.1f us/op' % (r['op'], r['ops_per_sec'], r.get('p99_ms'), r['server_cpu_us_per_op'])
    if r.get('database_cpu_us_per_op') is not None: line += ', PostgreSQL CPU %.1f us/op' % r['database_cpu_us_per_op']
    if r.get('fraction_of_health') is not None: line += ', %.0f%% of health' % (100 * r['fraction_of_health'])
    if r.get('errors'): line += ', %d errors (first: %s)' % (r['errors'], r.get('first_error'))
    print(line)
"
