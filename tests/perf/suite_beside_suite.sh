#!/usr/bin/env bash
# The whole suite on a busy machine (issue 19): RUNS runs of `./dev test` in a fresh clone
# of this checkout's HEAD, one after another, while a second fresh clone runs `./dev test`
# again and again beside them. Prints each run's exit status and time; the logs stay in
# the work directory.
#
#   tests/perf/suite_beside_suite.sh [RUNS] [WORK_DIR]     (3, /var/tmp/suite-beside-suite)
#
# Each clone installs what `./dev test` installs (its own .venv). Run as root, as CI does.
# The second copy's run under way when the measured runs are over is let finish (killed,
# it would leave its tests' servers behind).
set -uo pipefail
runs=${1:-3}
work=${2:-/var/tmp/suite-beside-suite}
repo=$(git -C "$(dirname "$0")/../.." rev-parse --show-toplevel)
head=$(git -C "$repo" rev-parse --short HEAD)

rm -rf "$work" && mkdir -p "$work"
git clone -q "$repo" "$work/measured" && git clone -q "$repo" "$work/beside"
git -C "$work/measured" checkout -q --detach "$head"
git -C "$work/beside" checkout -q --detach "$head"
echo "commit $head; $runs runs in $work/measured while $work/beside runs beside them"

(
    cd "$work/beside" || exit 1
    n=0
    while [ ! -e "$work/done" ]; do
        n=$((n + 1))
        started=$(date +%s)
        ./dev test >"$work/beside-$n.log" 2>&1
        echo "  beside run $n: exit $? in $(($(date +%s) - started)) s" >>"$work/summary"
    done
) &
beside=$!

sleep 60 # the second copy first: the measured runs start on a machine already busy
failed=0
for i in $(seq "$runs"); do
    started=$(date +%s)
    (cd "$work/measured" && ./dev test >"$work/measured-$i.log" 2>&1)
    status=$?
    [ "$status" = 0 ] || failed=1
    echo "measured run $i: exit $status in $(($(date +%s) - started)) s, load $(cut -d' ' -f1-3 /proc/loadavg)" |
        tee -a "$work/summary"
done
touch "$work/done"
echo "(waiting for the second copy's run under way to end)"
wait "$beside"
cat "$work/summary"
exit "$failed"
