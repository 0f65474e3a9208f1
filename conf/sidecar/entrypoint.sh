#!/bin/sh
# moletun sidecar: prepares and starts the tunnel-only sshd, as the unprivileged tunnel user.
#
#   entrypoint [SSHD-ARGS...]   prepare, then exec sshd -D -e -f CONFIG (the container)
#   entrypoint --prepare        prepare only (moletun-sidecar.service's ExecStartPre=)
#
# Preparing means:
#  - refuse to run as root: an unprivileged sshd serves only the user it runs as, and can
#    neither change user nor open a session for anyone else;
#  - generate each HostKey of the configuration that is missing (first start: the keys
#    volume or the state directory is empty), never overwrite one;
#  - refuse a missing configuration, and one that `sshd -T` shows is not hardened: session
#    channels, password or keyboard-interactive logins, forwarding beyond local TCP to
#    named targets, Unix socket or tun forwarding, X11, agent or pty, weak algorithms;
#  - refuse an authorized_keys file the tunnel user can write (it could give its key any
#    option it likes);
#  - print the host keys and their fingerprints, so an operator can pin them on the web
#    nodes (moletun's known_hosts_file) without trusting the network.
# MOLETUN_SIDECAR_CONFIG overrides the configuration's path.
set -eu

config=${MOLETUN_SIDECAR_CONFIG:-/etc/moletun-sidecar/sshd_config}
sshd=/usr/sbin/sshd
me=moletun-sidecar

say() {
	echo "$me: $*" >&2
}

die() {
	say "$*"
	exit 1
}

if [ "$(id -u)" = 0 ]; then
	die "refusing to run as root: run as the tunnel user (the image's USER, the unit's User=)"
fi
user=$(id -un)

if [ ! -f "$config" ] || [ ! -r "$config" ]; then
	die "refusing to start: no readable configuration at $config"
fi
# The check below reads the global settings: a Match block could undo any of them for some
# connections, and an Include could hide one.
if grep -q -i -E '^[[:space:]]*(Match|Include)[[:space:]]' "$config"; then
	die "refusing to start: $config has a Match or Include line, which the hardening check cannot see through"
fi

# Host keys: the HostKey lines of the configuration (sshd -T needs them to exist already).
umask 077
hostkeys=$(sed -n 's/^[[:space:]]*[Hh][Oo][Ss][Tt][Kk][Ee][Yy][[:space:]=]\{1,\}\([^[:space:]]*\).*/\1/p' "$config")
if [ -z "$hostkeys" ]; then
	die "refusing to start: $config names no HostKey"
fi
for key in $hostkeys; do
	if [ -e "$key" ]; then
		continue
	fi
	case "$key" in
	*ed25519*) type=ed25519 ;;
	*ecdsa*) type=ecdsa ;;
	*) die "HostKey $key is missing and its name does not say ed25519 or ecdsa: create it with ssh-keygen" ;;
	esac
	mkdir -p "$(dirname "$key")"
	ssh-keygen -q -t "$type" -N '' -C "$me@$(hostname)" -f "$key"
	say "generated host key $key"
done

if ! settings=$("$sshd" -T -f "$config" 2>&1); then
	die "refusing to start: sshd -T -f $config failed: $settings"
fi

# setting KEY -> its value in sshd -T's output (keys are lower case there).
setting() {
	printf '%s\n' "$settings" | sed -n "s/^$1 //p" | head -n 1
}

failures=0
refuse() { # refuse KEY VALUE WANTED
	say "not hardened: $1 is '$2' in $config (the kit needs $3)"
	failures=$((failures + 1))
}
want() { # want KEY VALUE...: the setting must be one of the values
	key=$1
	shift
	value=$(setting "$key")
	for ok in "$@"; do
		if [ "$value" = "$ok" ]; then
			return 0
		fi
	done
	refuse "$key" "$value" "$*"
}

want maxsessions 0
want allowtcpforwarding local no
want passwordauthentication no
want kbdinteractiveauthentication no
want hostbasedauthentication no
want permitemptypasswords no
want permitrootlogin no
want allowstreamlocalforwarding no
want permittunnel no
want x11forwarding no
want allowagentforwarding no
want permittty no
want permituserrc no
want gatewayports no
want permituserenvironment no

# PermitOpen must name targets: "any" (the default) lets a key reach every host and port
# the sidecar can, and a "*" host does the same for a port.
permitopen=$(setting permitopen)
case " $permitopen " in
*" any "* | "  " | *" *:"*) refuse permitopen "$permitopen" "the targets, e.g. PermitOpen pg_main:5432" ;;
esac

# No SHA-1 key exchange, no CBC or 3DES, no SHA-1 or MD5 MACs, no SHA-1 RSA or DSA
# signatures.
forbid() { # forbid KEY WORD: no algorithm in the setting's list may contain WORD
	value=$(setting "$1")
	case ",$value," in
	*"$2"*) refuse "$1" "$value" "no $2 algorithm" ;;
	esac
}
forbid kexalgorithms sha1
forbid ciphers cbc
forbid ciphers 3des
forbid macs sha1
forbid macs md5
forbid hostkeyalgorithms ssh-rsa
forbid hostkeyalgorithms ssh-dss
forbid pubkeyacceptedalgorithms ssh-rsa
forbid pubkeyacceptedalgorithms ssh-dss

# The keys file: the tunnel user must not be able to write it or its directory.
keysfile=$(setting authorizedkeysfile)
case "$keysfile" in
/*)
	keysfile=$(printf '%s' "$keysfile" | sed "s/%u/$user/g")
	for path in "$keysfile" "$(dirname "$keysfile")"; do
		if [ -w "$path" ]; then
			refuse authorizedkeysfile "$keysfile" "a file and directory user $user cannot write (root's, or a read-only mount)"
			break
		fi
	done
	if [ ! -e "$keysfile" ]; then
		say "no authorized keys yet: $keysfile does not exist (every key is refused)"
	fi
	;;
*) refuse authorizedkeysfile "$keysfile" "one absolute path, e.g. /etc/moletun-sidecar/authorized_keys/%u" ;;
esac

if [ "$failures" -gt 0 ]; then
	die "refusing to start sshd: $failures setting(s) not hardened"
fi

port=$(setting port)
name="[NAME]:$port"
if [ "$port" = 22 ]; then
	name=NAME
fi
for key in $hostkeys; do
	pub=$(ssh-keygen -y -f "$key" | cut -d ' ' -f 1,2)
	# "256 SHA256:... COMMENT (ED25519)" -> "SHA256:... (ED25519)"
	fingerprint=$(printf '%s\n' "$pub" | ssh-keygen -l -f - |
		sed 's/^[0-9]* \([^ ]*\) .*\(([^)]*)\)$/\1 \2/')
	say "host key $fingerprint: $pub"
	say "  known_hosts line, NAME being the name web nodes connect to: $name $pub"
done
say "listening on port $port as user $user; forwards allowed to: $permitopen"

if [ "${1:-}" = "--prepare" ]; then
	exit 0
fi
exec "$sshd" -D -e -f "$config" "$@"
