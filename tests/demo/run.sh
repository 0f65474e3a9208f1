#!/usr/bin/env bash
# moletun demo: installs dependencies, builds, starts a local sshd "sidecar" (no shell,
# PermitOpen-restricted, on loopback), an echo target (and PostgreSQL when installed),
# and runs `moletun run` in the foreground with a generated config. Ctrl-C stops it all.
#
#   bash tests/demo/run.sh              interactive: prints how to try it
#   bash tests/demo/run.sh --selftest   pushes a message through and exits 0/1
#
# Ports (override with the environment): MOLETUN_DEMO_SSH_PORT=22022 (sidecar),
# MOLETUN_DEMO_ECHO_PORT=17007 (echo target), MOLETUN_DEMO_FORWARD_PORT=15433 (moletun's
# local end for the echo target), MOLETUN_DEMO_PG_PORT=17432 / MOLETUN_DEMO_PG_FORWARD_PORT=15432
# (PostgreSQL, used only when its server package is installed; MOLETUN_DEMO_PG=0 turns it off).
set -euo pipefail

selftest=0
case "${1:-}" in
--selftest) selftest=1 ;;
"") ;;
*)
	echo "usage: $0 [--selftest]" >&2
	exit 2
	;;
esac

cd "$(dirname "$0")/../.."
top=$(pwd)

ssh_port=${MOLETUN_DEMO_SSH_PORT:-22022}
echo_port=${MOLETUN_DEMO_ECHO_PORT:-17007}
fwd_echo=${MOLETUN_DEMO_FORWARD_PORT:-15433}
pg_port=${MOLETUN_DEMO_PG_PORT:-17432}
fwd_pg=${MOLETUN_DEMO_PG_FORWARD_PORT:-15432}

if [ -t 1 ]; then
	say() { printf '\033[1mdemo:\033[0m %s\n' "$*"; }
else
	say() { printf 'demo: %s\n' "$*"; }
fi
die() {
	printf 'demo: error: %s\n' "$*" >&2
	exit 1
}

if [ "$(id -u)" -ne 0 ]; then
	die "run as root (bash $0 in a root shell): it installs packages and starts sshd"
fi

if [ -z "${MOLETUN_DEPS_DONE:-}" ]; then
	say "installing build and demo dependencies (tests/deps.sh)"
	bash tests/deps.sh
fi

say "building (build/)"
if [ -f build/build.ninja ]; then
	meson setup --reconfigure build >/dev/null
else
	meson setup build >/dev/null
fi
meson compile -C build >/dev/null
moletun=$top/build/moletun

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$ssh_port" "$echo_port" "$fwd_echo"; do
	port_in_use "$p" && die "127.0.0.1:$p is in use; pick other ports (see the top of $0)"
done

use_pg=0
initdb=$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || true)
if [ "${MOLETUN_DEMO_PG:-1}" != 0 ] && [ -n "$initdb" ] && id postgres >/dev/null 2>&1; then
	if port_in_use "$pg_port" || port_in_use "$fwd_pg"; then
		say "PostgreSQL ports $pg_port/$fwd_pg in use: demo runs without PostgreSQL"
	else
		use_pg=1
	fi
fi

work=$(mktemp -d /tmp/moletun-demo.XXXXXX)
chmod 700 "$work"
pgdir=""
sshd_pid=""
echo_pid=""
moletun_pid=""

kill_children_of() {
	local kids
	kids=$(ps -o pid= --ppid "$1" 2>/dev/null || true)
	for k in $kids; do
		kill_children_of "$k"
		kill -TERM "$k" 2>/dev/null || true
	done
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [ -n "$moletun_pid" ] && kill -0 "$moletun_pid" 2>/dev/null; then
		kill -TERM "$moletun_pid" 2>/dev/null || true
		wait "$moletun_pid" 2>/dev/null || true
	fi
	for pid in $sshd_pid $echo_pid; do
		kill_children_of "$pid"
		kill -TERM "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	if [ -n "$pgdir" ]; then
		runuser -u postgres -- "$(dirname "$initdb")/pg_ctl" -D "$pgdir/data" -m fast \
			stop >/dev/null 2>&1 || true
		rm -rf "$pgdir"
	fi
	if [ -n "${MOLETUN_DEMO_KEEP:-}" ]; then
		say "kept $work"
	else
		rm -rf "$work"
	fi
	say "stopped and cleaned up"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "sidecar: OpenSSH sshd on 127.0.0.1:$ssh_port (keys and config in $work)"
mkdir -p /run/sshd
chmod 755 /run/sshd
user=$(id -un)
ssh-keygen -q -t ed25519 -N '' -C demo-sidecar -f "$work/ssh_host_ed25519_key"
ssh-keygen -q -t ed25519 -N '' -C demo-moletun -f "$work/id_ed25519"
chmod 600 "$work/id_ed25519"
cp "$work/id_ed25519.pub" "$work/authorized_keys"
printf '[127.0.0.1]:%s %s\n' "$ssh_port" "$(cut -d' ' -f1,2 "$work/ssh_host_ed25519_key.pub")" \
	>"$work/known_hosts"

permit_open="127.0.0.1:$echo_port"
[ "$use_pg" = 1 ] && permit_open="$permit_open 127.0.0.1:$pg_port"
cat >"$work/sshd_config" <<EOF
# The sidecar: no shell, no TTY, forwarding only to the listed targets.
Port $ssh_port
ListenAddress 127.0.0.1
HostKey $work/ssh_host_ed25519_key
AuthorizedKeysFile $work/authorized_keys
AllowUsers $user
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitTTY no
ForceCommand /usr/sbin/nologin
AllowTcpForwarding yes
PermitOpen $permit_open
PermitListen none
AllowAgentForwarding no
AllowStreamLocalForwarding no
X11Forwarding no
PermitTunnel no
PidFile none
LogLevel VERBOSE
EOF
/usr/sbin/sshd -t -f "$work/sshd_config"
setsid /usr/sbin/sshd -D -e -f "$work/sshd_config" 2>"$work/sshd.log" &
sshd_pid=$!
for _ in $(seq 100); do
	grep -q "Server listening" "$work/sshd.log" && break
	kill -0 "$sshd_pid" 2>/dev/null || break
	sleep 0.05
done
grep -q "Server listening" "$work/sshd.log" || die "sshd did not start: $(cat "$work/sshd.log")"

say "echo target on 127.0.0.1:$echo_port (socat)"
setsid socat "TCP-LISTEN:$echo_port,bind=127.0.0.1,reuseaddr,fork" PIPE &
echo_pid=$!

pg_forward="; no PostgreSQL in this demo (install postgresql to get one)"
if [ "$use_pg" = 1 ]; then
	say "PostgreSQL target on 127.0.0.1:$pg_port (throwaway cluster, trust auth)"
	pgdir=$(mktemp -d /tmp/moletun-demo-pg.XXXXXX)
	chown postgres "$pgdir"
	runuser -u postgres -- "$initdb" -D "$pgdir/data" -A trust -U postgres >/dev/null
	runuser -u postgres -- "$(dirname "$initdb")/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w \
		-o "-c listen_addresses=127.0.0.1 -p $pg_port -k $pgdir" start >/dev/null
	pg_forward="local_forward = 127.0.0.1:$fwd_pg 127.0.0.1:$pg_port"
fi

sed -e "s|@WORK@|$work|g" -e "s|@SSH_PORT@|$ssh_port|g" -e "s|@USER@|$user|g" \
	-e "s|@FWD_ECHO@|$fwd_echo|g" -e "s|@ECHO_PORT@|$echo_port|g" \
	-e "s|@PG_FORWARD@|$pg_forward|g" tests/demo/moletun.conf.in >"$work/moletun.conf"

say "moletun check -c $work/moletun.conf"
"$moletun" check -c "$work/moletun.conf"

if [ "$selftest" = 1 ]; then
	"$moletun" run -c "$work/moletun.conf" 2>"$work/moletun.log" &
	moletun_pid=$!
	up=0
	for _ in $(seq 150); do
		if grep -q "tunnel demo: state .* -> up" "$work/moletun.log"; then
			up=1
			break
		fi
		kill -0 "$moletun_pid" 2>/dev/null || break
		sleep 0.1
	done
	ok=1
	if [ "$up" = 1 ]; then
		msg="hello through moletun $$"
		got=$(printf '%s\n' "$msg" | socat -t 3 - "TCP:127.0.0.1:$fwd_echo" || true)
		say "sent '$msg' to 127.0.0.1:$fwd_echo, got back '$got'"
		[ "$got" = "$msg" ] || ok=0
		if [ "$use_pg" = 1 ]; then
			ans=$(psql -h 127.0.0.1 -p "$fwd_pg" -U postgres -Atc 'select 40 + 2' 2>&1 || true)
			say "psql through the tunnel: select 40 + 2 -> $ans"
			[ "$ans" = 42 ] || ok=0
		fi
	else
		say "tunnel did not come up within 15 s"
		ok=0
	fi
	if [ "$ok" = 1 ]; then
		say "selftest passed"
		exit 0
	fi
	say "selftest FAILED; moletun log:"
	cat "$work/moletun.log" >&2
	say "sshd log:"
	tail -n 30 "$work/sshd.log" >&2
	exit 1
fi

cat <<EOF

  moletun is running in the foreground below (logs on stderr). In another terminal try:

    echo hi | socat - TCP:127.0.0.1:$fwd_echo
    python3 -c 'import socket; s = socket.create_connection(("127.0.0.1", $fwd_echo)); s.sendall(b"hi\\n"); print(s.recv(100))'
EOF
if [ "$use_pg" = 1 ]; then
	echo "    psql -h 127.0.0.1 -p $fwd_pg -U postgres"
fi
cat <<EOF
    $moletun ctl -s $work/control.sock status
    $moletun ctl -s $work/control.sock status --json

  Watch a reconnect: kill the sidecar's session process and see the tunnel come back:
    pkill -P $sshd_pid

  Ctrl-C stops moletun, the sidecar and the targets, and removes $work.

EOF
"$moletun" run -c "$work/moletun.conf" &
moletun_pid=$!
wait "$moletun_pid"
