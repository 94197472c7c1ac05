#!/usr/bin/env bash
# Commit a benchmark's records while it runs, so a run longer than a sitting loses at most the
# runs in progress when the sitting ends (the next sitting, on any machine, restarts the same
# `lrfree bench ... --out DIR` and trains only what is missing).
#
#   make results-long &                       # or any `lrfree bench --out DIR ...`
#   bash benchmarks/commit_partial.sh benchmarks/out/long-suite $! 10
#
# Every MINUTES (default 10) and once more when PID exits: if DIR/results.jsonl changed, commit
# that file alone (`git commit --only`: whatever else is staged stays staged and uncommitted).
# A commit that meets another git process's lock is retried at the next tick.
set -u
dir=${1:?usage: commit_partial.sh DIR PID [MINUTES]}
pid=${2:?usage: commit_partial.sh DIR PID [MINUTES]}
minutes=${3:-10}
file="$dir/results.jsonl"

commit() {
  [ -f "$file" ] || return 0
  git add -- "$file" 2>/dev/null || return 0
  if ! git diff --cached --quiet -- "$file"; then
    n=$(wc -l < "$file")
    git commit -q --only -m "$(basename "$dir"): partial results, $n records" -- "$file" \
      && echo "committed $file ($n records)"
  fi
}

while kill -0 "$pid" 2>/dev/null; do
  for _ in $(seq "$((minutes * 6))"); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 10
  done
  commit
done
commit
