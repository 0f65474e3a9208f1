#!/usr/bin/env bash
# Builds the libFuzzer targets with clang in build-fuzz/ and runs each for SECONDS
# (default 60), starting from the checked-in corpus:
#   bash tests/fuzz/run.sh [SECONDS] [TARGET...]        targets: config duration fwdspec jumpspec control sshkey kexinit hostkey
# New interesting inputs go to build-fuzz/corpus/TARGET (not the source tree). A crash
# leaves build-fuzz/crash-TARGET-* and makes this script exit 1: minimize it
# (build-fuzz/tests/fuzz/fuzz_TARGET -minimize_crash=1 FILE), fix it, and add the input to
# tests/fuzz/corpus/TARGET/ so `meson test` replays it from then on.
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(config duration fwdspec jumpspec control sshkey kexinit hostkey)
build=${MOLETUN_FUZZ_BUILD:-build-fuzz}

if ! command -v clang >/dev/null || [ ! -f "$(clang -print-file-name=libclang_rt.fuzzer-x86_64.a)" ]; then
	echo "fuzz: clang and its libFuzzer runtime are needed: apt-get install clang libclang-rt-14-dev" >&2
	exit 1
fi

# Only the fuzz targets matter here: the rest of the tree is built as little as possible,
# and clang's warnings outside tests/fuzz must not stop a fuzzing run.
opts=(-Dfuzz=true -Dtests=false -Dwerror=false -Dbuildtype=debugoptimized)
if [ -f "$build/build.ninja" ]; then
	CC=clang meson setup --reconfigure "$build" "${opts[@]}" >/dev/null
else
	CC=clang meson setup "$build" "${opts[@]}" >/dev/null
fi
meson compile -C "$build" $(printf 'tests/fuzz/fuzz_%s ' "${targets[@]}") >/dev/null

failed=()
for t in "${targets[@]}"; do
	corpus="$build/corpus/$t"
	mkdir -p "$corpus"
	log="$build/fuzz-$t.log"
	echo "== fuzz_$t for ${seconds}s (log: $log)"
	dict=()
	[ -f "tests/fuzz/$t.dict" ] && dict=(-dict="tests/fuzz/$t.dict")
	# -max_len: the config fuzzer needs room for whole files.
	if "$build/tests/fuzz/fuzz_$t" "${dict[@]}" -max_total_time="$seconds" -max_len=4096 -timeout=10 \
		-rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$build/crash-$t-" \
		"$corpus" "tests/fuzz/corpus/$t" >"$log" 2>&1; then
		grep -E '^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::average_exec_per_sec|stat::new_units_added)' "$log" | sed 's/^/   /'
	else
		failed+=("$t")
		echo "   CRASH or failure in fuzz_$t:"
		grep -E 'ERROR|invariant failed|runtime error|SUMMARY|Test unit written' "$log" | head -20 | sed 's/^/   /'
	fi
done
if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzz: failures in: ${failed[*]}" >&2
	exit 1
fi
echo "fuzz: no crash in ${targets[*]} (${seconds}s each)"
