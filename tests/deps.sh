#!/usr/bin/env bash
# Installs everything moletun needs to build, test and run its demo on Debian 12.
# As root it always runs apt-get (a fresh machine has none of it); otherwise it only
# reports what is missing.
set -euo pipefail

packages=(
	libssh2-1-dev libev-dev libsystemd-dev libinih-dev libcmocka-dev libcurl4-openssl-dev
	meson ninja-build pkg-config gcc clang
	openssh-server openssh-client python3 python3-paramiko iproute2 iptables socat
	postgresql-15 systemd-container
	# the sidecar kit's container image, built by tests/integration/test_sidecar_kit.py
	buildah debootstrap
	# the Debian package (tests/deb/run.sh), alert rules and textfile metrics
	debhelper dpkg-dev fakeroot lintian acl prometheus prometheus-node-exporter
	# the completion script through bash-completion's own loader (test_bash_completion.py)
	bash-completion
	# wall-clock steps (tests/integration/test_clock_step.py, the deployment scenario)
	faketime
	# the deployment scenario (tests/scenario/run.sh): its writers and its timeline picture
	python3-psycopg2 python3-matplotlib
)

missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done

if [ "$(id -u)" -ne 0 ]; then
	if [ ${#missing[@]} -gt 0 ]; then
		echo "deps: missing packages: ${missing[*]}" >&2
		echo "deps: install them as root: apt-get install -y ${missing[*]}" >&2
		exit 1
	fi
	exit 0
fi

export DEBIAN_FRONTEND=noninteractive
if ! apt-get update -q; then
	if [ ${#missing[@]} -gt 0 ]; then
		echo "deps: apt-get update failed and ${missing[*]} are missing" >&2
		exit 1
	fi
	echo "deps: apt-get update failed; everything needed is installed, going on" >&2
	exit 0
fi
apt-get install -y -q --no-install-recommends "${packages[@]}"
