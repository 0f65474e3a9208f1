#!/usr/bin/env bash
# moletun's benchmark against ssh -N -L and autossh (issue 6), one command, as root:
#
#   bash tests/bench/run.sh            full run (~10 minutes on 2 cores)
#   bash tests/bench/run.sh --quick    shorter runs, a smoke test (~2 minutes)
#
# Installs what it needs (apt-get), builds moletun into build-bench/ (release) unless
# MOLETUN_BIN names a binary, then runs tests/bench/bench.py, which prints progress, one
# `BENCH name=... tool=... value=... unit=...` line per figure and the table at the end.
# Extra arguments go to bench.py (e.g. `--only 1,5` runs items 1 and 5).
# Environment: MOLETUN_BIN=path (skip the build), MOLETUN_DEPS_DONE=1 (skip apt-get),
# MOLETUN_BENCH_KEEP=1 (keep the temp dir with every log).
set -euo pipefail

case "${1:-}" in
-h | --help)
	sed -n '2,13p' "$0"
	exit 0
	;;
esac

cd "$(dirname "$0")/../.."
top=$(pwd)

if [ "$(id -u)" -ne 0 ]; then
	echo "bench: run as root (bash $0 in a root shell): it installs packages, starts sshd and PostgreSQL," \
		"and uses network namespaces" >&2
	exit 1
fi

packages=(
	libssh2-1-dev libev-dev libsystemd-dev libinih-dev libcmocka-dev libcurl4-openssl-dev
	meson ninja-build pkg-config gcc
	openssh-server openssh-client autossh postgresql python3 iproute2 iptables
)
if [ -z "${MOLETUN_DEPS_DONE:-}" ]; then
	missing=()
	for p in "${packages[@]}"; do
		if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
			missing+=("$p")
		fi
	done
	if [ ${#missing[@]} -gt 0 ]; then
		echo "bench: installing ${missing[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -q || echo "bench: apt-get update failed; trying the install anyway" >&2
		# PostgreSQL is optional (item 9 is skipped with a reason without it): install the
		# rest first so a failing postgresql does not take the others down.
		rest=()
		for p in "${missing[@]}"; do [ "$p" = postgresql ] || rest+=("$p"); done
		if [ ${#rest[@]} -gt 0 ]; then
			apt-get install -y -q --no-install-recommends "${rest[@]}"
		fi
		if [[ " ${missing[*]} " == *" postgresql "* ]]; then
			apt-get install -y -q --no-install-recommends postgresql ||
				echo "bench: postgresql could not be installed; pgbench item will be skipped" >&2
		fi
	fi
fi

if [ -z "${MOLETUN_BIN:-}" ]; then
	echo "bench: building moletun (build-bench/, --buildtype=release)"
	if [ -f build-bench/build.ninja ]; then
		meson setup --reconfigure build-bench --buildtype=release >/dev/null
	else
		meson setup build-bench --buildtype=release >/dev/null
	fi
	meson compile -C build-bench moletun >/dev/null
	MOLETUN_BIN=$top/build-bench/moletun
fi
export MOLETUN_BIN

# bench.py cleans up after itself (every process it started, its temp dirs, the network
# namespace, the PostgreSQL cluster); the trap covers a run that is interrupted or killed.
export BENCH_TAG=$$
tag=$((BENCH_TAG % 100000))
py=""
cleanup() {
	local rc=$?
	trap - EXIT INT TERM HUP
	if [ -n "$py" ] && kill -0 "$py" 2>/dev/null; then
		kill -TERM "$py" 2>/dev/null || true
		wait "$py" 2>/dev/null || true
	fi
	ip netns del "mbbh$tag" 2>/dev/null || true
	ip link del "mbva$tag" 2>/dev/null || true
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

python3 -u tests/bench/bench.py "$@" &
py=$!
set +e
wait "$py"
rc=$?
set -e
py=""
exit "$rc"
