#!/usr/bin/env bash
# Kill a running `lrfree bench` with SIGKILL, then run the same command again, and compare the
# restarted report with an uninterrupted one (docs/benchmark.md, "The full suite, measured").
#
#   bash benchmarks/kill_restart.sh [SECONDS_BEFORE_KILL] [OUT] [REFERENCE_REPORT_MD]
#
# Defaults: 480 s, /tmp/fullkill, docs/results.md. The suite is `--suite full`; about 25 min
# on 2 cores in all. Prints the runs finished before the kill, the worker processes left
# after it, the restart's wall time, and how many table rows differ from the reference
# (final metric, gap, train loss; wall-clock columns ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
wait_s=${1:-480}
out=${2:-/tmp/fullkill}
ref=${3:-docs/results.md}
cmd=(.venv/bin/lrfree bench --suite full --out "$out" --no-plots --no-progress)
rm -rf "$out"
"${cmd[@]}" > "$out.first.log" 2>&1 &
pid=$!
sleep "$wait_s"
kill -9 "$pid"
wait "$pid" 2> /dev/null || true
sleep 3
echo "runs finished before the kill: $(wc -l < "$out/results.jsonl")"
echo "worker processes left 3 s after the kill: $(pgrep -fc 'multiprocessing.spawn' || true)"
cp "$out/results.jsonl" "$out.before.jsonl"
start=$(date +%s)
"${cmd[@]}" > "$out.second.log" 2>&1
echo "restart: $(($(date +%s) - start)) s; $(grep -o '[0-9]* to train' "$out.second.log")"
.venv/bin/python - "$out" "$ref" <<'PY'
import json, sys
out, ref = sys.argv[1], sys.argv[2]
before = [json.loads(x) for x in open(f"{out}.before.jsonl") if x.strip()]
after = [json.loads(x) for x in open(f"{out}/results.jsonl") if x.strip()]
print("finished lines kept unchanged:", after[: len(before)] == before, f"({len(after)} in all)")

def rows(path):
    table, task = {}, None
    for line in open(path):
        if line.startswith("#"):
            task = line.strip()
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 8 and cells[0] != "optimizer":
            table[(task, cells[0], cells[1])] = tuple(cells[2:5])
    return table

a, b = rows(ref), rows(f"{out}/report.md")
print(f"table rows differing from {ref}: {sum(a[k] != b.get(k) for k in a)} of {len(a)}")
PY
