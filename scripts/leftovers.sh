#!/usr/bin/env bash
# What a test run left running. `scripts/test` exports REPAVE_TEST_RUN=ID
# before `cargo test`, so every process the tests start inherits it: repave,
# fleet processes, instances and their commands, browsers — also those that
# detached into their own session. After the tests, whatever still carries
# the mark is a leftover. Processes still stopping get BOUND seconds; what
# is left then is listed, killed (so nothing stays on the machine), and the
# script fails.
#
#   scripts/leftovers.sh ID [BOUND]
set -euo pipefail
run="${1:?usage: scripts/leftovers.sh RUN_ID [BOUND_SECONDS]}"
bound="${2:-30}"
# Neither this script nor the subshells it forks may carry the mark it
# looks for: a forked subshell shows the environment its parent was started
# with, whatever `unset` did since.
if [ -n "${REPAVE_TEST_RUN:-}" ]; then
    exec env -u REPAVE_TEST_RUN "$0" "$@"
fi

marked() {
    # NUL-separated variables; other users' processes and ones that just
    # ended cannot be read.
    grep -lzxF "REPAVE_TEST_RUN=$run" /proc/[0-9]*/environ 2>/dev/null |
        sed 's|^/proc/||; s|/environ$||' | grep -vx "$$" || true
}

deadline=$((SECONDS + bound))
left="$(marked)"
while [ -n "$left" ] && [ "$SECONDS" -lt "$deadline" ]; do
    sleep 1
    left="$(marked)"
done
if [ -z "$left" ]; then
    echo "no process of this test run is left"
    exit 0
fi
echo "FAILED: processes started by this test run still running ${bound}s after it:" >&2
for pid in $left; do
    [ -d "/proc/$pid" ] || continue
    cmd="$({ tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null || true)"
    fleet="$({ tr '\0' '\n' <"/proc/$pid/environ"; } 2>/dev/null | sed -n 's/^REPAVE_FLEET_STATE=//p' || true)"
    echo "  pid $pid: ${cmd% }${fleet:+ (fleet state $fleet)}" >&2
done
# shellcheck disable=SC2086 # one pid per word
kill -9 $left 2>/dev/null || true
exit 1
