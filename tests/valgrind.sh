#!/usr/bin/env bash
# Runs the integration tests that exercise the daemon's memory the most under valgrind
# memcheck: every `moletun run` they start is wrapped (harness.py, MOLETUN_WRAPPER), each
# daemon writes DIR/valgrind.PID.log, and a test fails when its log reports an error — a
# definitely lost block counts as one — or when the daemon exits with 99.
#   bash tests/valgrind.sh [BUILD_DIR] [TEST...]       (default: build, the list below)
# test_limits.py's 50-restart loop also asks valgrind (vgdb) for the heap after restart 20
# and 50: lost bytes must not grow, reachable bytes by less than 1 KiB. Left out: tests
# whose timing assumptions (1 s keepalives) valgrind's slowdown breaks (liveness,
# blackhole), and those that only run other programs (check, systemd_units).
set -euo pipefail
cd "$(dirname "$0")/.."

build=${1:-build}
shift || true
tests=("$@")
[ ${#tests[@]} -gt 0 ] ||
	tests=(forward reconnect shutdown hostkey_auth agent control_plane control_eviction alerts
		limits hostile secrets descriptors stalled_readers metrics_textfile memory_bound)

if [ ! -x "$build/moletun" ]; then
	echo "valgrind: $build/moletun not built" >&2
	exit 1
fi
if ! command -v valgrind >/dev/null; then
	echo "valgrind: not installed (apt-get install valgrind)" >&2
	exit 1
fi

export MOLETUN_BIN=$(realpath "$build/moletun")
export PYTHONDONTWRITEBYTECODE=1
export MOLETUN_WRAPPER="valgrind --leak-check=full --errors-for-leak-kinds=definite \
--error-exitcode=99 --num-callers=40 --suppressions=$PWD/tests/valgrind.supp \
--log-file={logdir}/valgrind.%p.log"

failed=()
start=$SECONDS
for t in "${tests[@]}"; do
	t0=$SECONDS
	rc=0
	timeout 900 python3 "tests/integration/test_$t.py" >"$build/valgrind-$t.log" 2>&1 || rc=$?
	# 77: the whole file skipped (a missing prerequisite, e.g. sshd)
	case $rc in
	0) result=ok ;;
	77) result=skipped ;;
	*) result="FAILED (exit $rc)"; failed+=("$t") ;;
	esac
	printf '== valgrind %-14s %4ds  %s\n' "$t" $((SECONDS - t0)) "$result"
	grep -E '^(Ran |OK|FAILED)' "$build/valgrind-$t.log" | sed 's/^/   /'
	if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then
		tail -n 80 "$build/valgrind-$t.log" | sed 's/^/   | /'
	fi
done
echo "valgrind: ${#tests[@]} test files in $((SECONDS - start))s"
if [ ${#failed[@]} -gt 0 ]; then
	echo "valgrind: failures in: ${failed[*]} (logs: $build/valgrind-*.log)" >&2
	exit 1
fi
