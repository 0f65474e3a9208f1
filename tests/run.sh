#!/usr/bin/env bash
# The README's test command: installs dependencies, builds, runs the whole suite (unit and
# integration tests against a real sshd), compiles the benchmark's release build (-O3,
# werror), runs the suite again built with ASan+UBSan, then the
# daemon's integration tests under valgrind memcheck, a short libFuzzer run of every
# parser, the README's demo in its self-test mode, the deployment scenario with its
# timeline (tests/scenario/run.sh), and the Debian package built, checked by lintian,
# installed and purged (tests/deb/run.sh).
#   bash tests/run.sh
# MOLETUN_FUZZ_SECONDS (default 15) sets the fuzzing time per target; 0 skips fuzzing.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/deps.sh

# valgrind for tests/valgrind.sh, gdb's gcore for test_secrets.py's core dump check, and
# clang's libFuzzer/sanitizer runtimes (only recommended by clang, so not installed by
# deps.sh's --no-install-recommends) for tests/fuzz/run.sh
hardening_tools=()
command -v valgrind >/dev/null || hardening_tools+=(valgrind)
command -v gcore >/dev/null || hardening_tools+=(gdb)
dpkg-query -W -f='${Status}' libclang-rt-14-dev 2>/dev/null | grep -q 'install ok installed' ||
	hardening_tools+=(libclang-rt-14-dev)
if [ ${#hardening_tools[@]} -gt 0 ] && [ "$(id -u)" -eq 0 ]; then
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		"${hardening_tools[@]}"
fi

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

# The benchmark's build (tests/bench/run.sh): -O3 lets gcc see warnings (format-truncation,
# maybe-uninitialized) that the debugoptimized build does not. Compiled only, to keep the
# run short: the suite above and below tests the code itself.
echo "== build-release/ (release, werror: compile only) =="
if [ -f build-release/build.ninja ]; then
	meson setup --reconfigure build-release --buildtype=release -Dwerror=true
else
	meson setup build-release --buildtype=release -Dwerror=true
fi
meson compile -C build-release

echo "== build-asan/ (AddressSanitizer + UndefinedBehaviorSanitizer) =="
run_suite build-asan -Db_sanitize=address,undefined -Db_lundef=false

echo "== valgrind memcheck (tests/valgrind.sh build) =="
bash tests/valgrind.sh build

fuzz_seconds=${MOLETUN_FUZZ_SECONDS:-15}
if [ "$fuzz_seconds" -gt 0 ]; then
	echo "== libFuzzer, ${fuzz_seconds}s per target (tests/fuzz/run.sh) =="
	bash tests/fuzz/run.sh "$fuzz_seconds"
fi

echo "== README demo (tests/demo/run.sh --selftest) =="
MOLETUN_DEPS_DONE=1 bash tests/demo/run.sh --selftest

echo "== deployment scenario (tests/scenario/run.sh) =="
bash tests/scenario/run.sh build

echo "== Debian package: build, lintian, install, purge (tests/deb/run.sh) =="
MOLETUN_DEPS_DONE=1 bash tests/deb/run.sh

echo "== all tests passed (plain and sanitized builds, valgrind, fuzzing, demo, scenario, package) =="
