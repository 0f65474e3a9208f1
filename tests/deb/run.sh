#!/usr/bin/env bash
# The Debian packages end to end, on this machine, as root (CI's is a fresh Debian 12):
#  1. builds them (moletun and moletun-sidecar) with dpkg-buildpackage -b from a copy of
#     the tree (nothing is written beside the checkout);
#  2. lintian must report no error and no warning for either (overrides carry their reason
#     in debian/*.lintian-overrides);
#  3. installs it with apt (with its Recommends) and checks what it installed: moletun
#     --version, `moletun check` of the shipped configuration run as the service user,
#     `systemd-analyze verify` of the installed unit, the user, the modes of /etc/moletun,
#     the conffile, the enabled unit, and that the service user can write its metrics file
#     into node_exporter's textfile directory;
#     `moletun check` run by root judges key files as user moletun will open them;
#  4. purges it and checks that nothing is left: the files under /etc, /usr and /var/lib
#     are those of before, and the moletun user and group are kept (a key left in
#     /etc/moletun stays owned by them, not by a uid that could be handed out again);
#  5. then the same for moletun-sidecar: installed, its user tunnel, directories, conffile
#     and enabled unit checked, `systemd-analyze verify` of the unit, its entrypoint run as
#     user tunnel (host key generated, configuration judged hardened), `sshd -t` of the
#     installed configuration with its ADAPT lines set as an administrator would; purged,
#     with nothing left but the tunnel user and group.
# Without systemd as PID 1 (CI) the postinst enables the unit but does not start it
# (tests/deb/readme_install.py installs it into a booted systemd; the sidecar's unit runs
# under systemd in tests/integration/test_sidecar_kit.py). It refuses to run where moletun
# or moletun-sidecar is installed already, since the purge would remove it.
#   bash tests/deb/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
src=$(pwd)

if [ "$(id -u)" -ne 0 ]; then
	echo "SKIP: tests/deb/run.sh installs and purges a package: run it as root"
	exit 0
fi
if [ -z "${MOLETUN_DEPS_DONE:-}" ]; then
	bash tests/deps.sh
fi
for p in moletun moletun-sidecar; do
	if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'installed\|config-files'; then
		echo "FAIL: the $p package is already on this machine; purge it first" >&2
		exit 1
	fi
done
# A purge keeps the moletun system user and group (Debian's practice): they may be here
# from an earlier run; the install then reuses them.

apt_get() {
	# another apt run on the same machine must make this one wait, not fail
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -y -q "$@"
}

passed=0
failed=0
ok() {
	passed=$((passed + 1))
	echo "ok: $*"
}
fail() {
	failed=$((failed + 1))
	echo "FAIL: $*"
}
check() { # check "what" command...
	local what=$1
	shift
	if "$@"; then ok "$what"; else fail "$what"; fi
}

version=$(sed -n "s/^[[:space:]]*version: '\([^']*\)',\$/\1/p" meson.build | head -n 1)
work=$(mktemp -d /tmp/moletun-deb.XXXXXX)
installed=0
sidecar_installed=0
# The tunnel user the sidecar package creates (and its purge keeps) is removed again when
# this run made it: a system user `tunnel` with a locked password would make
# tests/deb/readme_install.py's sidecar (a root sshd serving `tunnel`) refuse it next time.
tunnel_made=0
remove_tunnel_user() {
	if [ "$tunnel_made" -eq 1 ]; then
		userdel tunnel 2>/dev/null || true
		groupdel tunnel 2>/dev/null || true
		tunnel_made=0
	fi
}
cleanup() {
	if [ "$installed" -eq 1 ]; then
		apt_get purge moletun >/dev/null 2>&1 || true
	fi
	if [ "$sidecar_installed" -eq 1 ]; then
		apt_get purge moletun-sidecar >/dev/null 2>&1 || true
	fi
	remove_tunnel_user
	rm -rf "$work"
}
trap cleanup EXIT

# What a purge must restore. What apt, dpkg and man-db keep for themselves and the account
# databases' backups change with any package: left out. (/run is checked for /run/moletun
# only: other programs' tests come and go there.)
snapshot() {
	find /etc /usr /var/lib -xdev \
		\( -path /var/lib/apt -o -path /var/lib/dpkg -o -path /var/lib/man-db \) -prune \
		-o -print |
		grep -v -E '^/etc/(passwd|group|shadow|gshadow|subuid|subgid)-$|^/etc/ld\.so\.cache$' |
		sort
}

echo "== build (dpkg-buildpackage -b -us -uc) =="
start=$SECONDS
tree="$work/moletun-$version"
mkdir -p "$tree"
if git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
	git -C "$src" ls-files -z --cached --others --exclude-standard |
		(cd "$src" && xargs -0 cp --parents -t "$tree" --)
else
	tar -C "$src" --exclude='./build*' --exclude=./.git -cf - . | tar -C "$tree" -xf -
fi
if ! (cd "$tree" && dpkg-checkbuilddeps) 2>/dev/null; then
	apt_get build-dep "$tree" >/dev/null
fi
(cd "$tree" && dpkg-buildpackage -b -us -uc) >"$work/build.log" 2>&1 || {
	tail -n 60 "$work/build.log"
	fail "dpkg-buildpackage"
	exit 1
}
deb="$work/moletun_${version}_$(dpkg --print-architecture).deb"
sidecar_deb="$work/moletun-sidecar_${version}_all.deb"
check "package built: $(basename "$deb")" test -f "$deb"
check "package built: $(basename "$sidecar_deb")" test -f "$sidecar_deb"
echo "build: $((SECONDS - start))s"

echo "== lintian =="
# Errors and warnings fail; info tags are printed for the record.
lintian --fail-on error,warning --info "$work"/moletun_*.changes >"$work/lintian.log" 2>&1 &&
	rc=0 || rc=$?
grep -v 'running with root privileges is not recommended' "$work/lintian.log" || true
check "lintian: no errors or warnings (exit $rc)" test "$rc" = 0

echo "== the README's install steps under a booted systemd (tests/deb/readme_install.py) =="
# Before the install here: the container's root is an overlay of this machine's.
if python3 tests/deb/readme_install.py "$deb"; then
	ok "readme_install.py"
else
	fail "readme_install.py"
fi

echo "== install (apt-get install ./$(basename "$deb")) =="
before=$(snapshot)
textfile_dir=/var/lib/prometheus/node-exporter
acl_before=$(getfacl -cp "$textfile_dir" 2>/dev/null || true)
passwd_before=$(sort /etc/passwd /etc/group)
installed=1
apt_get install "$deb" >"$work/install.log" 2>&1 || {
	cat "$work/install.log"
	fail "apt-get install"
	exit 1
}
ok "apt-get install"

check "moletun --version says $version" test "$(moletun --version)" = "moletun $version"
check "/usr/bin/moletun is the installed binary" test "$(command -v moletun)" = /usr/bin/moletun
out=$(runuser -u moletun -- moletun check 2>&1) && rc=0 || rc=$?
check "moletun check accepts the shipped /etc/moletun/moletun.conf, as user moletun" \
	test "$rc" = 0
check "  and says it has no tunnels ($out)" test "$out" = "no tunnels configured"
out=$(moletun check 2>&1) && rc=0 || rc=$?
check "moletun check run by root checks the service's configuration as user moletun ($out)" \
	test "$rc" = 0 -a "$out" = "moletun: checking as user moletun, the user the service runs as (-u root: as root)
no tunnels configured"

# A key is judged as the daemon (user moletun) will open it: root's 0600 key is refused
# with the chown to run, the same key given to moletun passes.
ssh-keygen -q -t ed25519 -N '' -C moletun-deb-test -f "$work/id_ed25519"
install -m 0600 "$work/id_ed25519" /etc/moletun/id_ed25519
: >/etc/moletun/known_hosts
printf '%s\n' '[tunnel:primary]' 'host = db.example.com' 'user = tunnel' \
	'identity_file = /etc/moletun/id_ed25519' 'known_hosts_file = /etc/moletun/known_hosts' \
	'local_forward = 127.0.0.1:5433 pg_main:5432' >/etc/moletun/conf.d/primary.conf
out=$(moletun check 2>&1) && rc=0 || rc=$?
check "moletun check refuses root's 0600 key and names the chown (exit $rc)" test "$rc" = 1
check "  message: $(tail -n 1 <<<"$out")" grep -q -F \
	"/etc/moletun/conf.d/primary.conf:4: identity file /etc/moletun/id_ed25519: Permission denied (moletun runs as moletun here: chown moletun: /etc/moletun/id_ed25519)" <<<"$out"
chown moletun: /etc/moletun/id_ed25519
out=$(moletun check 2>&1) && rc=0 || rc=$?
check "moletun check accepts the key once it is moletun's (exit $rc: $out)" test "$rc" = 0
out=$(moletun check -u root 2>&1) && rc=0 || rc=$?
check "moletun check -u root refuses it, as root would open it (exit $rc)" test "$rc" = 1
rm -f /etc/moletun/id_ed25519 /etc/moletun/known_hosts /etc/moletun/conf.d/primary.conf
check "/etc/moletun/moletun.conf is a conffile" \
	bash -c "dpkg-query -W -f='\${Conffiles}' moletun | grep -q '^ /etc/moletun/moletun.conf '"
check "every line of the shipped config but sections and the include is a comment" \
	test -z "$(grep -v -E '^(#|;|$|\[moletun\]$|\[include\]$|files = /etc/moletun/conf\.d/\*\.conf$)' \
		/etc/moletun/moletun.conf)"
check "user moletun, home /var/lib/moletun, no login shell" \
	bash -c 'getent passwd moletun | grep -q ":/var/lib/moletun:/usr/sbin/nologin$"'
check "/etc/moletun is root:moletun 0750" test "$(stat -c '%U:%G %a' /etc/moletun)" = "root:moletun 750"
check "/etc/moletun/conf.d is root:moletun 0750" \
	test "$(stat -c '%U:%G %a' /etc/moletun/conf.d)" = "root:moletun 750"
unit=$(dpkg -L moletun | grep '/systemd/system/moletun.service$')
check "unit installed ($unit)" test -f "$unit"
verify=$(systemd-analyze verify --man=no "$unit" 2>&1) && rc=0 || rc=$?
check "systemd-analyze verify $unit is silent${verify:+: $verify}" \
	test "$rc" = 0 -a -z "$(printf '%s' "$verify" | grep moletun)"
check "unit enabled at install (multi-user.target.wants)" \
	test -L /etc/systemd/system/multi-user.target.wants/moletun.service
for f in /usr/share/man/man8/moletun.8.gz /usr/share/man/man5/moletun.conf.5.gz \
	/usr/lib/sysusers.d/moletun.conf /usr/lib/tmpfiles.d/moletun.conf \
	/usr/share/doc/moletun/examples/moletun.conf \
	/usr/share/moletun/grafana/moletun.json /usr/share/bash-completion/completions/moletun \
	/usr/share/moletun/prometheus/moletun-rules.yml; do
	check "installed $f" test -f "$f"
done
if command -v promtool >/dev/null; then
	check "promtool check rules on the installed rules" \
		promtool check rules /usr/share/moletun/prometheus/moletun-rules.yml
fi
man5=$(zcat /usr/share/man/man5/moletun.conf.5.gz)
check "moletun.conf(5) documents metrics_textfile" grep -q metrics_textfile <<<"$man5"

# The daemon as its service user writes into node_exporter's directory (the ACL that
# postinst adds).
if [ -d "$textfile_dir" ]; then
	run_dir="$work/run"
	mkdir -p "$run_dir"
	chown moletun:moletun "$run_dir"
	chmod 755 "$work"
	cat >"$run_dir/metrics.conf" <<-EOF
		[moletun]
		control_socket = $run_dir/control.sock
		metrics_textfile = $textfile_dir/moletun.prom
		metrics_interval = 100ms
	EOF
	setpriv --reuid=moletun --regid=moletun --init-groups -- \
		moletun run -c "$run_dir/metrics.conf" 2>"$run_dir/daemon.log" &
	daemon=$!
	for _ in $(seq 50); do
		[ -f "$textfile_dir/moletun.prom" ] && break
		sleep 0.1
	done
	kill -TERM "$daemon"
	wait "$daemon" && rc=0 || rc=$?
	check "the daemon, as user moletun, wrote $textfile_dir/moletun.prom" \
		grep -q '^# TYPE moletun_tunnel_up gauge$' "$textfile_dir/moletun.prom"
	check "  granted by an ACL entry" bash -c "getfacl -cp $textfile_dir | grep -q '^user:moletun:rwx$'"
	check "  mode 0644 owned by moletun" \
		test "$(stat -c '%U %a' "$textfile_dir/moletun.prom")" = "moletun 644"
	check "  and stopped cleanly (exit $rc)" test "$rc" = 0
	if [ "$failed" -gt 0 ]; then cat "$run_dir/daemon.log"; fi
fi

echo "== purge (apt-get purge moletun) =="
apt_get purge moletun >"$work/purge.log" 2>&1 || {
	cat "$work/purge.log"
	fail "apt-get purge"
	exit 1
}
installed=0
ok "apt-get purge"
check "package gone from dpkg's database" \
	bash -c "! dpkg-query -W -f='\${Status}' moletun 2>/dev/null | grep -q 'installed\|config-files'"
check "user and group moletun kept" bash -c 'getent passwd moletun && getent group moletun'
check "/etc/passwd and /etc/group as before but for them" \
	test "$(sort /etc/passwd /etc/group | grep -v '^moletun:')" = "$(grep -v '^moletun:' <<<"$passwd_before")"
after=$(snapshot)
left=$(diff <(printf '%s\n' "$before") <(printf '%s\n' "$after") || true)
check "nothing left behind or removed under /etc /usr /var/lib${left:+:
$left}" test -z "$left"
check "no /run/moletun" test ! -e /run/moletun
check "the ACL of $textfile_dir as before" \
	test "$(getfacl -cp "$textfile_dir" 2>/dev/null || true)" = "$acl_before"

echo "== install (apt-get install ./$(basename "$sidecar_deb")) =="
before=$(snapshot)
passwd_before=$(sort /etc/passwd /etc/group)
if ! getent passwd tunnel >/dev/null; then
	tunnel_made=1
fi
sidecar_installed=1
apt_get install "$sidecar_deb" >"$work/sidecar-install.log" 2>&1 || {
	cat "$work/sidecar-install.log"
	fail "apt-get install moletun-sidecar"
	exit 1
}
ok "apt-get install moletun-sidecar"
if [ -e /etc/systemd/system/multi-user.target.wants/ssh.service ]; then
	check "the install says the host's own sshd is enabled too, and how to disable it" \
		grep -q "systemctl disable --now ssh.service ssh.socket" "$work/sidecar-install.log"
fi
config=/etc/moletun-sidecar/sshd_config
check "$config is a conffile" \
	bash -c "dpkg-query -W -f='\${Conffiles}' moletun-sidecar | grep -q '^ $config '"
check "$config is the kit's conf/sidecar/sshd_config" cmp -s "$config" conf/sidecar/sshd_config
check "user tunnel, home /nonexistent, no login shell" \
	bash -c 'getent passwd tunnel | grep -q ":/nonexistent:/usr/sbin/nologin$"'
for d in /etc/moletun-sidecar /etc/moletun-sidecar/authorized_keys; do
	check "$d is root:root 0755" test "$(stat -c '%U:%G %a' "$d")" = "root:root 755"
done
unit=$(dpkg -L moletun-sidecar | grep '/systemd/system/moletun-sidecar.service$')
check "unit installed ($unit)" test -f "$unit"
verify=$(systemd-analyze verify --man=no "$unit" 2>&1) && rc=0 || rc=$?
check "systemd-analyze verify $unit is silent${verify:+: $verify}" \
	test "$rc" = 0 -a -z "$(printf '%s' "$verify" | grep moletun-sidecar)"
security=$(systemd-analyze security --offline=true --no-pager "$unit" 2>&1 | grep 'Overall exposure')
check "systemd-analyze security: ${security#*: } (at most 2.0 OK)" \
	awk -v s="${security##*: }" 'BEGIN { split(s, a, " "); exit !(a[1] <= 2.0 && a[2] == "OK") }'
check "unit enabled at install (multi-user.target.wants)" \
	test -L /etc/systemd/system/multi-user.target.wants/moletun-sidecar.service
for f in /usr/lib/sysusers.d/moletun-sidecar.conf /usr/lib/tmpfiles.d/moletun-sidecar.conf \
	/usr/libexec/moletun-sidecar/entrypoint /usr/share/moletun/sidecar/Containerfile \
	/usr/share/moletun/sidecar/compose.yaml /usr/share/moletun/sidecar/sshd_config \
	/usr/share/doc/moletun-sidecar/README.md.gz; do
	check "installed $f" test -f "$f"
done
# What the unit does without a systemd here: the state directory (StateDirectory=), then
# the entrypoint as the tunnel user.
install -d -m 0700 -o tunnel -g tunnel /var/lib/moletun-sidecar
as_tunnel=(setpriv --reuid=tunnel --regid=tunnel --init-groups)
out=$("${as_tunnel[@]}" /usr/libexec/moletun-sidecar/entrypoint --prepare 2>&1) && rc=0 || rc=$?
check "the entrypoint, as user tunnel, accepts the installed configuration (exit $rc)" test "$rc" = 0
check "  and generated the host key, printing its fingerprint" \
	grep -q -E '^moletun-sidecar: host key SHA256:[^ ]+ \(ED25519\): ssh-ed25519 ' <<<"$out"
check "  owned by tunnel, mode 0600" \
	test "$(stat -c '%U %a' /var/lib/moletun-sidecar/ssh_host_ed25519_key)" = "tunnel 600"
# An administrator's adaptation: only the three ADAPT lines change.
sed -e '/^# ADAPT:/,/^[^#]/{s/^Port .*/Port 2299/;s/^PermitOpen .*/PermitOpen 127.0.0.1:5432 db2.internal:5432/}' \
	"$config" >"$work/sshd_config.adapted"
chmod 0644 "$work/sshd_config.adapted"
check "  the adapted copy differs in two lines" \
	test "$(diff "$config" "$work/sshd_config.adapted" | grep -c '^>')" = 2
out=$("${as_tunnel[@]}" sshd -t -f "$work/sshd_config.adapted" 2>&1) && rc=0 || rc=$?
check "sshd -t -f (installed config, ADAPT lines set) as user tunnel (exit $rc)${out:+: $out}" \
	test "$rc" = 0
out=$("${as_tunnel[@]}" env MOLETUN_SIDECAR_CONFIG="$work/sshd_config.adapted" \
	/usr/libexec/moletun-sidecar/entrypoint --prepare 2>&1) && rc=0 || rc=$?
check "  and the entrypoint accepts it (exit $rc)" \
	grep -q "forwards allowed to: 127.0.0.1:5432 db2.internal:5432" <<<"$out"

echo "== purge (apt-get purge moletun-sidecar) =="
apt_get purge moletun-sidecar >"$work/sidecar-purge.log" 2>&1 || {
	cat "$work/sidecar-purge.log"
	fail "apt-get purge moletun-sidecar"
	exit 1
}
sidecar_installed=0
ok "apt-get purge moletun-sidecar"
check "package gone from dpkg's database" \
	bash -c "! dpkg-query -W -f='\${Status}' moletun-sidecar 2>/dev/null | grep -q 'installed\|config-files'"
check "user and group tunnel kept" bash -c 'getent passwd tunnel && getent group tunnel'
remove_tunnel_user
check "/etc/passwd and /etc/group as before (once this run's tunnel user is removed)" \
	test "$(sort /etc/passwd /etc/group)" = "$passwd_before"
after=$(snapshot)
left=$(diff <(printf '%s\n' "$before") <(printf '%s\n' "$after") || true)
check "nothing left behind or removed under /etc /usr /var/lib (host key included)${left:+:
$left}" test -z "$left"

echo "deb: $((SECONDS - start))s"
echo "deb: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
