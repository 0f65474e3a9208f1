#!/usr/bin/env bash
# The deployment scenario (tests/scenario/scenario.py): two web nodes with moletun, a
# streaming PostgreSQL replica and a writer each, a sidecar sshd and the primary in front
# of them, all in network namespaces, run through a schedule of faults. About 2-3 minutes.
#   bash tests/scenario/run.sh [BUILD_DIR]        (default: build)
# Writes BUILD_DIR/scenario/{timeline.png,summary.txt,results.json,logs/}. Exits 0 after
# printing SKIP and the reason when something it needs is missing (not root, no tool).
set -euo pipefail
cd "$(dirname "$0")/../.."

build=${1:-build}
skip() {
	echo "SKIP: deployment scenario: $*"
	exit 0
}

[ "$EUID" -eq 0 ] || skip "needs root (network namespaces, iptables, runuser)"
for tool in ip iptables socat cc runuser ssh-keygen; do
	command -v "$tool" >/dev/null || skip "\`$tool\` not found (bash tests/deps.sh installs it)"
done
[ -x /usr/sbin/sshd ] || skip "/usr/sbin/sshd not found (openssh-server)"
for tool in initdb pg_ctl pg_basebackup; do
	[ -x "/usr/lib/postgresql/15/bin/$tool" ] || skip "PostgreSQL 15 not found (postgresql-15)"
done
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] || skip "libfaketime not found (faketime)"
[ -x /usr/bin/python3 ] || skip "/usr/bin/python3 not found"
/usr/bin/python3 -c 'import psycopg2' 2>/dev/null || skip "python3-psycopg2 not installed"
/usr/bin/python3 -c 'import matplotlib' 2>/dev/null || skip "python3-matplotlib not installed"
id postgres >/dev/null 2>&1 || skip "no \`postgres\` user (postgresql-15)"
[ -x "$build/moletun" ] || {
	echo "deployment scenario: $build/moletun not built (meson compile -C $build)" >&2
	exit 1
}

mkdir -p "$build/scenario"
# full malloc stacks and the suppressions of the integration tests, for a sanitizer build
exec env PYTHONDONTWRITEBYTECODE=1 ASAN_OPTIONS=fast_unwind_on_malloc=0 \
	LSAN_OPTIONS=suppressions="$PWD/tests/lsan.supp" /usr/bin/python3 tests/scenario/scenario.py \
	--moletun "$build/moletun" --out "$build/scenario" "${@:2}"
