#!/usr/bin/env bash
# The README's test command: installs dependencies, builds, runs the whole suite (unit and
# integration tests against a real sshd), then again built with ASan+UBSan, then the
# README's demo in its self-test mode.
#   sudo bash tests/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/deps.sh

run_suite() {
	local dir=$1
	shift
	if [ -f "$dir/build.ninja" ]; then
		meson setup --reconfigure "$dir" "$@"
	else
		meson setup "$dir" "$@"
	fi
	meson compile -C "$dir"
	meson test -C "$dir" --print-errorlogs
}

echo "== build/ (debugoptimized) =="
run_suite build

echo "== build-asan/ (AddressSanitizer + UndefinedBehaviorSanitizer) =="
run_suite build-asan -Db_sanitize=address,undefined -Db_lundef=false

echo "== README demo (tests/demo/run.sh --selftest) =="
MOLETUN_DEPS_DONE=1 bash tests/demo/run.sh --selftest

echo "== all tests passed (plain and sanitized builds, demo) =="
