#!/bin/bash
# Measures one op against a fresh server: ops/s, p99, and server CPU per op
# (utime+stime from /proc around the run); with PG_OWNER set (the user the
# PostgreSQL server runs as), PostgreSQL's CPU per op too.
#
#   scripts/bench-server.sh target/release/strongbox put
#   PG_OWNER=nobody scripts/bench-server.sh target/release/strongbox get \
#       --database-url postgres://strongbox@127.0.0.1:55432/bench1
#
# The database must exist and be empty.
set -euo pipefail
B=$(realpath "$1"); OP=$2; shift 2
D=$(mktemp -d)
cd "$D"
"$B" serve --listen 127.0.0.1:0 "$@" > out.txt 2> err.txt &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$D"' EXIT
for _ in $(seq 100); do grep -q listening out.txt && break; sleep 0.1; done
EP=http://$(sed -n 's/listening on //p' out.txt)
KEY=$(cat strongbox-data/operator.key)
tick=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' /proc/$PID/stat; }
pgcpu() {
    [ -n "${PG_OWNER:-}" ] || { echo 0; return; }
    for p in $(pgrep -u "$PG_OWNER" postgres); do awk '{print $14+$15}' /proc/$p/stat 2>/dev/null; done |
        awk '{s+=$1} END {print s+0}'
}
bench() { "$B" --endpoint "$EP" --api-key "$KEY" --json bench --op "$OP" --concurrency 64 --value-size 1024 --duration "$1"; }
bench 2s >/dev/null
c0=$(cpu); p0=$(pgcpu)
R=$(bench 8s)
c1=$(cpu); p1=$(pgcpu)
echo "$R" | python3 -c "
import sys, json
r = json.loads(sys.stdin.read())
ops = r.get('ops') or r.get('operations')
line = '$OP: %.0f ops/s, p99 %s ms, server CPU %.1f us/op' % (r['ops_per_sec'], r.get('p99_ms'), ($c1-$c0)/$tick*1e6/ops)
if ${PG_OWNER:+1}0: line += ', PostgreSQL CPU %.1f us/op' % (($p1-$p0)/$tick*1e6/ops)
print(line)
"
