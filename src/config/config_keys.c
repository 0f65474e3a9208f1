#include "config_table.h"

#include <assert.h>
#include <stddef.h>
#include <string.h>

#include "config.h"
#include "config_internal.h"
#include "fwdspec.h"
#include "hostspec.h"
#include "jumpspec.h"

/*
 * The configuration keys as data: one entry per key with its type, limits, default and
 * help. config_types.c gives each type its behaviour, config_print.c the reference pages.
 */

static_assert(sizeof(enum host_key_policy) == sizeof(int), "enum fields are set as int");
static_assert(sizeof(enum alert_format) == sizeof(int), "enum fields are set as int");

/* sun_path holds 108 bytes including the terminating NUL. */
#define SOCKET_PATH_MAX 107
#define FORWARDS_MAX	256
#define HEADERS_MAX	32
#define FILTER_MAX	1024

static const struct config_choice probe_choices[] = {
    {"tcp", PROBE_TCP},
    {"postgres", PROBE_POSTGRES},
    {"none", PROBE_NONE},
    {NULL, 0},
};

static const struct config_choice host_key_choices[] = {
    {"yes", HOST_KEY_STRICT},
    {"accept-new", HOST_KEY_ACCEPT_NEW},
    {"no", HOST_KEY_NO},
    {NULL, 0},
};

static const struct config_choice alert_format_choices[] = {
    {"json", ALERT_FORMAT_JSON},
    {"slack", ALERT_FORMAT_SLACK},
    {"alertmanager", ALERT_FORMAT_ALERTMANAGER},
    {NULL, 0},
};

#define MOLETUN_FIELD(f) .offset = offsetof(struct config, f)
#define TUNNEL_FIELD(f)	 .offset = offsetof(struct tunnel_config, f)
#define ALERT_FIELD(f)	 .offset = offsetof(struct alert_config, f)
#define TUNNEL_DIGEST(f) .digest_offset = offsetof(struct tunnel_config, f)

static const struct config_key moletun_keys[] = {
    {
	.name = "control_socket",
	.type = CONFIG_TYPE_PATH,
	.default_value = CONFIG_DEFAULT_CONTROL_SOCKET,
	.max = SOCKET_PATH_MAX,
	MOLETUN_FIELD(control_socket),
	.placeholder = "PATH",
	.help = "Unix socket on which the daemon answers moletun ctl (status, reconnect, "
		"reload, metrics).",
    },
    {
	.name = "control_group",
	.type = CONFIG_TYPE_STRING,
	.max = 64,
	MOLETUN_FIELD(control_group),
	.placeholder = "GROUP",
	.help = "Group that owns the control socket (mode 0660), so that its members may "
		"use moletun ctl. Unset: the daemon's own group.",
    },
    {
	.name = "log_level",
	.type = CONFIG_TYPE_LOG_LEVEL,
	.default_value = "info",
	MOLETUN_FIELD(log_level),
	.placeholder = "LEVEL",
	.help = "Least severe messages logged: debug, info, notice, warning or err.",
    },
    {
	.name = "metrics_textfile",
	.type = CONFIG_TYPE_PATH,
	.max = 4095,
	MOLETUN_FIELD(metrics_textfile),
	.placeholder = "PATH",
	.help = "File the daemon rewrites every metrics_interval with the metrics of "
		"moletun ctl metrics, for node_exporter's textfile collector (which reads "
		"only files named *.prom; Debian's directory is "
		"/var/lib/prometheus/node-exporter). Replaced atomically (a temporary file "
		"in the same directory, renamed over it), mode 0644; at shutdown every "
		"tunnel is written as down. The directory must exist and be writable by the "
		"daemon, and not by every user (refused, even sticky like /tmp: another "
		"user's file there could not be replaced): moletun.service allows "
		"/var/lib/prometheus/node-exporter, another "
		"directory needs ReadWritePaths= in a drop-in. Unset: no file.",
    },
    {
	.name = "metrics_interval",
	.type = CONFIG_TYPE_DURATION,
	.default_value = "15s",
	.min = 100,
	.max = HOUR,
	MOLETUN_FIELD(metrics_interval_ms),
	.placeholder = "DURATION",
	.help = "How often metrics_textfile is rewritten; a failed write is logged and "
		"tried again at the next one. Three failed writes in a row are an error "
		"and a metrics_stale alert event (node_exporter serves the older file); the "
		"next good write sends metrics_fresh.",
    },
    {
	.name = "window_budget",
	.type = CONFIG_TYPE_SIZE,
	.default_value = "64M",
	.min = 0,
	.max = 64 * GIB,
	MOLETUN_FIELD(window_budget),
	.placeholder = "SIZE",
	.help = "Most receive window granted beyond each channel's first 256K, summed over "
		"every local_forward connection of every tunnel (see channel_window_max): data "
		"the server may send that clients have not read yet, which clients that stop "
		"reading leave in the daemon's memory. Past it windows stop growing; a window "
		"counts until its data is read or its connection closes. 0: windows never "
		"grow. K, M or G multiply by 1024.",
    },
    {
	.name = "memory_limit",
	.type = CONFIG_TYPE_SIZE,
	.default_value = "160M",
	.min = 16 * MIB,
	.max = 64 * GIB,
	MOLETUN_FIELD(memory_limit),
	.placeholder = "SIZE",
	.help = "Most memory that clients and servers may make the daemon hold, counted "
		"over every tunnel: libssh2's session memory, receive windows granted and "
		"not used yet, buffered bytes, and the kernel's queues of client sockets at "
		"their bounds. A client's channel opens only when the account has room for "
		"its window and what its socket may hold (about 0.45M, so the default admits "
		"about 380 connections open at once over all tunnels); until then it waits "
		"(up to 5s, costing only its receive queue; a client held by down_hold too) "
		"and is then closed. From half of it windows stop growing; from 3/4 grown "
		"windows go back to where they started and new connections start with 64K; "
		"from 7/8 clients of a forward holding more than 1/8 of it wait, and at the "
		"limit every new client does; those that waited in vain are counted as "
		"rejected with the reason memory. moletun.service's MemoryHigh= must leave "
		"room above it (see the unit). K, M or G multiply by 1024.",
    },
};

static const struct config_key include_keys[] = {
    {
	.name = "files",
	.type = CONFIG_TYPE_INCLUDE,
	.flags = CONFIG_KEY_REPEATABLE,
	.placeholder = "GLOB",
	.help = "Reads further configuration files at this point, in sorted order. A "
		"pattern that matches nothing is not an error (an empty conf.d "
		"directory); a plain path that does not exist is. Includes may nest 8 "
		"deep.",
    },
};

static const struct config_key tunnel_keys[] = {
    {
	.name = "ssh_host",
	.type = CONFIG_TYPE_HOST,
	.max = HOSTSPEC_HOST_MAX,
	TUNNEL_FIELD(ssh_host),
	.placeholder = "ALIAS",
	.help = "A Host alias of ssh_config whose settings fill in the keys this section does "
		"not set. At load (run, check, reload) moletun runs ssh -G [-F ssh_config] ALIAS, "
		"OpenSSH's own evaluation of its configuration (Host, Match, Include, wildcards and "
		"tokens, the first value winning), without a shell and bounded to 5 s, and takes: "
		"HostName as host, Port, User, the first IdentityFile that exists as identity_file, "
		"the first UserKnownHostsFile as known_hosts_file, StrictHostKeyChecking as "
		"strict_host_key_checking (ask counts as yes), ProxyJump as proxy_jump (a hop that "
		"is itself a Host alias gets its HostName, Port and User from ssh -G too), "
		"ConnectTimeout as connect_timeout, ServerAliveInterval (when not 0) and "
		"ServerAliveCountMax as keepalive_interval and keepalive_count_max, and every "
		"LocalForward and RemoteForward. A key written in this section wins over "
		"ssh_config's value wherever it stands; one local_forward (or remote_forward) "
		"here replaces all of ssh_config's. '~' in paths is the home directory of the user "
		"moletun runs as; %-tokens in IdentityFile are not expanded. Errors, reported at "
		"this line: no ssh program, an unknown alias, and ProxyCommand, CertificateFile or "
		"Match exec, which moletun cannot honour; see SSH_CONFIG ALIASES for the rule that "
		"tells an alias from a host name, what moletun check prints, reloads, and the "
		"service's sandbox.",
    },
    {
	.name = "ssh_config",
	.type = CONFIG_TYPE_PATH,
	.max = 4095,
	TUNNEL_FIELD(ssh_config),
	.placeholder = "PATH",
	.help = "The ssh_config file ssh -G reads for ssh_host (its -F option), instead of "
		"~/.ssh/config and /etc/ssh/ssh_config. Must be readable. Unset: OpenSSH's usual "
		"files, as ssh does. Only with ssh_host.",
    },
    {
	.name = "host",
	.type = CONFIG_TYPE_HOST,
	.flags = CONFIG_KEY_REQUIRED,
	.max = HOSTSPEC_HOST_MAX,
	TUNNEL_FIELD(host),
	.placeholder = "HOST",
	.help = "SSH server to connect to: a host name or an IPv4 or IPv6 address "
		"(without brackets). Required unless ssh_host gives it (as it gives user).",
    },
    {
	.name = "port",
	.type = CONFIG_TYPE_PORT,
	.default_value = "22",
	.min = 1,
	.max = 65535,
	TUNNEL_FIELD(port),
	.placeholder = "PORT",
	.help = "SSH server port.",
    },
    {
	.name = "user",
	.type = CONFIG_TYPE_STRING,
	.flags = CONFIG_KEY_REQUIRED,
	.max = HOSTSPEC_USER_MAX,
	TUNNEL_FIELD(user),
	.placeholder = "USER",
	.help = "User name on the SSH server.",
    },
    {
	.name = "identity_file",
	.type = CONFIG_TYPE_PATH,
	.flags = CONFIG_KEY_CONTENTS,
	TUNNEL_FIELD(identity_file),
	TUNNEL_DIGEST(identity_file_digest),
	.placeholder = "PATH",
	.help = "Private key in OpenSSH format (Ed25519 or ECDSA: RSA user keys are "
		"refused by OpenSSH 8.8 and later with this libssh2). Like OpenSSH, "
		"moletun refuses a key that group or others may access: use mode 0600 or "
		"0400, owned by root or moletun's user, named directly (a symbolic link is "
		"refused). An encrypted key may use at most 500 bcrypt rounds (ssh-keygen "
		"-a). Needed unless use_agent = yes.",
    },
    {
	.name = "identity_passphrase_file",
	.type = CONFIG_TYPE_PATH,
	.flags = CONFIG_KEY_CONTENTS,
	TUNNEL_FIELD(identity_passphrase_file),
	TUNNEL_DIGEST(identity_passphrase_file_digest),
	.placeholder = "PATH",
	.help = "File whose first line is the passphrase of identity_file, with the same "
		"permission rules as the key.",
    },
    {
	.name = "use_agent",
	.type = CONFIG_TYPE_BOOL,
	.default_value = "no",
	TUNNEL_FIELD(use_agent),
	.placeholder = "yes|no",
	.help = "Also try the keys of an ssh-agent (agent_socket, or SSH_AUTH_SOCK).",
    },
    {
	.name = "agent_socket",
	.type = CONFIG_TYPE_PATH,
	.max = SOCKET_PATH_MAX,
	TUNNEL_FIELD(agent_socket),
	.placeholder = "PATH",
	.help = "ssh-agent socket for use_agent. Unset: the SSH_AUTH_SOCK environment "
		"variable.",
    },
    {
	.name = "known_hosts_file",
	.type = CONFIG_TYPE_PATH,
	.flags = CONFIG_KEY_CONTENTS,
	TUNNEL_FIELD(known_hosts_file),
	TUNNEL_DIGEST(known_hosts_file_digest),
	.placeholder = "PATH",
	.help = "OpenSSH known_hosts file holding the server's host key. Required unless "
		"strict_host_key_checking = no; must exist unless it is accept-new. Owned by "
		"root or moletun's user, not writable by group or others, named directly (a "
		"symbolic link is refused). Several tunnels may share one: under "
		"strict_host_key_checking = yes a reload restarts a tunnel only when the lines "
		"that name its server or one of its bastions changed.",
    },
    {
	.name = "strict_host_key_checking",
	.type = CONFIG_TYPE_ENUM,
	.default_value = "yes",
	.choices = host_key_choices,
	TUNNEL_FIELD(strict_host_key_checking),
	.placeholder = "yes|accept-new|no",
	.help = "yes: the server's key must be in known_hosts_file. accept-new: a host "
		"not yet in the file is added on first connection (the file is created if "
		"missing), a changed key is still refused. no: any key is accepted and "
		"the daemon warns loudly; do not use it outside tests.",
    },
    {
	.name = "proxy_jump",
	.type = CONFIG_TYPE_JUMP,
	.max = JUMP_HOPS_MAX,
	TUNNEL_FIELD(jump_hops),
	.count_offset = offsetof(struct tunnel_config, n_jump_hops),
	.placeholder = "[USER@]HOST[:PORT][,...]",
	.help = "Reaches host through these SSH servers (bastions) in turn, as ssh -J does: "
		"moletun connects to the first, opens a direct-tcpip channel through it to the "
		"next (the last one opens it to host and port), and runs the next SSH session "
		"inside that channel, so a bastion relays only encrypted bytes. USER defaults "
		"to user and PORT to 22; IPv6 addresses go in brackets ([fd00::1]:2222); at "
		"most 8 hops. The first hop's name is resolved on this machine, every later "
		"one (and host) by the bastion before it, which must permit it (PermitOpen). "
		"Every hop's host key is checked against known_hosts_file as the server's is "
		"([HOST]:PORT entries for ports other than 22), and every hop authenticates "
		"with proxy_jump_identity_file when set, otherwise as the tunnel does "
		"(identity_file, use_agent). keepalive_interval and keepalive_count_max cover "
		"the whole path: a dead bastion is noticed through the tunnel's own session. "
		"none or an empty value connects directly.",
    },
    {
	.name = "proxy_jump_identity_file",
	.type = CONFIG_TYPE_PATH,
	.flags = CONFIG_KEY_CONTENTS,
	TUNNEL_FIELD(jump_identity_file),
	TUNNEL_DIGEST(jump_identity_file_digest),
	.placeholder = "PATH",
	.help = "Private key every proxy_jump hop authenticates with instead of "
		"identity_file, with the same format and permission rules; use_agent = yes "
		"still offers the agent's keys too. Only with proxy_jump.",
    },
    {
	.name = "proxy_jump_identity_passphrase_file",
	.type = CONFIG_TYPE_PATH,
	.flags = CONFIG_KEY_CONTENTS,
	TUNNEL_FIELD(jump_identity_passphrase_file),
	TUNNEL_DIGEST(jump_identity_passphrase_file_digest),
	.placeholder = "PATH",
	.help = "File whose first line is the passphrase of proxy_jump_identity_file, with "
		"the same permission rules as the key.",
    },
    {
	.name = "local_forward",
	.type = CONFIG_TYPE_FORWARD,
	.flags = CONFIG_KEY_REPEATABLE,
	.max = FORWARDS_MAX,
	.forward_kind = FORWARD_LOCAL,
	TUNNEL_FIELD(forwards),
	.count_offset = offsetof(struct tunnel_config, n_forwards),
	.placeholder = "[BIND:]PORT HOST:HOSTPORT",
	.help = "Listens on BIND:PORT on this machine and forwards each connection through "
		"the tunnel to HOST:HOSTPORT, as the server resolves it (ssh_config "
		"LocalForward syntax). BIND defaults to 127.0.0.1; * or an empty BIND "
		"listens on every address. IPv6 addresses go in brackets: "
		"[::1]:5433 [fd00::5]:5432.",
    },
    {
	.name = "remote_forward",
	.type = CONFIG_TYPE_FORWARD,
	.flags = CONFIG_KEY_REPEATABLE,
	.max = FORWARDS_MAX,
	.forward_kind = FORWARD_REMOTE,
	TUNNEL_FIELD(forwards),
	.count_offset = offsetof(struct tunnel_config, n_forwards),
	.placeholder = "[BIND:]PORT HOST:HOSTPORT",
	.help = "Asks the server to listen on BIND:PORT and forwards each connection to "
		"HOST:HOSTPORT as this machine resolves it (ssh_config RemoteForward "
		"syntax). Binding other than loopback needs GatewayPorts on the server.",
    },
    {
	.name = "connect_timeout",
	.type = CONFIG_TYPE_DURATION,
	.default_value = "5s",
	.min = 100,
	.max = 10 * MINUTE,
	TUNNEL_FIELD(connect_timeout_ms),
	.placeholder = "DURATION",
	.help = "Limit for the whole connection set-up: TCP connect, SSH handshake, host "
		"key check, authentication and forward requests.",
    },
    {
	.name = "keepalive_interval",
	.type = CONFIG_TYPE_DURATION,
	.default_value = "5s",
	.min = SECOND,
	.max = HOUR,
	TUNNEL_FIELD(keepalive_interval_ms),
	.placeholder = "DURATION",
	.help = "Sends an SSH keepalive after this long without hearing from the server.",
    },
    {
	.name = "keepalive_count_max",
	.type = CONFIG_TYPE_UINT,
	.default_value = "3",
	.min = 1,
	.max = 100,
	TUNNEL_FIELD(keepalive_count_max),
	.placeholder = "N",
	.help = "The server is declared dead, and the tunnel reconnects, after "
		"keepalive_interval times this without hearing from it.",
    },
    {
	.name = "backoff_initial",
	.type = CONFIG_TYPE_DURATION,
	.default_value = "100ms",
	.min = 10,
	.max = HOUR,
	TUNNEL_FIELD(backoff_initial_ms),
	.placeholder = "DURATION",
	.help = "First wait before reconnecting after a network failure; it doubles on "
		"each further failure up to backoff_max.",
    },
    {
	.name = "backoff_max",
	.type = CONFIG_TYPE_DURATION,
	.default_value = "1s",
	.min = 10,
	.max = HOUR,
	TUNNEL_FIELD(backoff_max_ms),
	.placeholder = "DURATION",
	.help = "Longest wait between reconnection attempts after network failures "
		"(timed out, reset, dead peer). Not less than backoff_initial. A refused "
		"connect is retried after 100 ms instead (at most backoff_max), up to 600 "
		"times in a row.",
    },
    {
	.name = "auth_retry_interval",
	.type = CONFIG_TYPE_DURATION,
	.default_value = "60s",
	.min = SECOND,
	.max = 24 * HOUR,
	TUNNEL_FIELD(auth_retry_interval_ms),
	.placeholder = "DURATION",
	.help = "Wait between attempts after an authentication or host key failure, which "
		"needs a human rather than a quick retry.",
    },
    {
	.name = "start_hold",
	.type = CONFIG_TYPE_DURATION,
	.default_value = "5s",
	.min = 0,
	.max = 10 * MINUTE,
	TUNNEL_FIELD(start_hold_ms),
	.placeholder = "DURATION",
	.help = "Clients that connect before the tunnel's first connection attempt (since "
		"moletun, or this tunnel after a reload, started) has ended wait for it, up "
		"to this long, instead of being closed at once: a restart of moletun fails no "
		"client that its listeners (kept in systemd's FD store) took meanwhile. If "
		"that attempt fails they are closed, or keep waiting under down_hold. Once "
		"the tunnel was up, down_hold alone rules. 0 closes them at once.",
    },
    {
	.name = "down_hold",
	.type = CONFIG_TYPE_DURATION,
	.default_value = "0",
	.min = 0,
	.max = 5 * MINUTE,
	TUNNEL_FIELD(down_hold_ms),
	.placeholder = "DURATION",
	.help = "While the tunnel is down, new client connections wait up to this long for "
		"it to come back instead of being closed at once. 0 closes them at once.",
    },
    {
	.name = "max_connections",
	.type = CONFIG_TYPE_UINT,
	.default_value = "1024",
	.min = 1,
	.max = 65535,
	TUNNEL_FIELD(max_connections),
	.placeholder = "N",
	.help = "Most client connections open at once on each forward, local or remote "
		"(channels the server opens on a remote_forward count too); further ones are "
		"closed at once and counted as rejected.",
    },
    {
	.name = "session_memory_max",
	.type = CONFIG_TYPE_SIZE,
	.default_value = "32M",
	.min = 4 * MIB,
	.max = 4 * GIB,
	TUNNEL_FIELD(session_memory_max),
	.placeholder = "SIZE",
	.help = "Most memory the SSH session may hold besides what its forwarded connections "
		"are owed (twice what each holds in the memory account, see memory_limit: its "
		"receive window, 256K or what it grew to, or libssh2's 2M for a "
		"remote_forward one, for data its client has not read yet). Packets the "
		"server sends and nobody asked for are held here; over the limit the session "
		"is dropped and the tunnel backs off. K, M or G multiply by 1024.",
    },
    {
	.name = "channel_window_max",
	.type = CONFIG_TYPE_SIZE,
	.default_value = "32M",
	.min = 0,
	.max = GIB,
	TUNNEL_FIELD(channel_window_max),
	.placeholder = "SIZE",
	.help = "Largest receive window of a local_forward connection's channel. One stream "
		"moves at most one window per round trip: channels start with 256K (64K while "
		"the memory account sheds, see memory_limit) and double theirs while a whole "
		"window arrives within about one round trip of the session and the client "
		"keeps up, and halve it back (not below where it started) when the client "
		"falls behind or the stream slows; all of them within the daemon's "
		"window_budget and memory_limit. 32M carries ~130 MB/s over a 250 ms round "
		"trip. 0 (or up to 256K): windows stay where they started. K, M or G multiply "
		"by 1024.",
    },
    {
	.name = "probe",
	.type = CONFIG_TYPE_ENUM,
	.default_value = "tcp",
	.choices = probe_choices,
	TUNNEL_FIELD(probe),
	.placeholder = "tcp|postgres|none",
	.help = "How each local_forward's target is checked through the live session every "
		"probe_interval. tcp: a direct-tcpip channel to the target opens (the server "
		"connected to it). postgres: also sends PostgreSQL's SSLRequest and needs its "
		"one-byte answer, which catches a wrong or dead service without credentials "
		"and leaves no line in PostgreSQL's log. none: no probes. The sidecar must "
		"permit the target (PermitOpen), as for clients.",
    },
    {
	.name = "probe_interval",
	.type = CONFIG_TYPE_DURATION,
	.default_value = "10s",
	.min = 0,
	.max = HOUR,
	TUNNEL_FIELD(probe_interval_ms),
	.placeholder = "DURATION",
	.help = "Time between two probes of each target; 0 disables probes. A client's "
		"channel open failing with \"connect failed\" marks the target unreachable "
		"at once, and a later success reachable, whatever this is.",
    },
    {
	.name = "probe_timeout",
	.type = CONFIG_TYPE_DURATION,
	.default_value = "3s",
	.min = 100,
	.max = MINUTE,
	TUNNEL_FIELD(probe_timeout_ms),
	.placeholder = "DURATION",
	.help = "A probe with no answer after this long marks its target unreachable.",
    },
    {
	.name = "degraded_rtt",
	.type = CONFIG_TYPE_DURATION,
	.default_value = "1s",
	.min = 0,
	.max = MINUTE,
	TUNNEL_FIELD(degraded_rtt_ms),
	.placeholder = "DURATION",
	.help = "The tunnel's health is degraded while its smoothed keepalive round-trip "
		"time is above this (and ok again below 80 % of it); 0 disables.",
    },
    {
	.name = "audit_interval",
	.type = CONFIG_TYPE_DURATION,
	.default_value = "1d",
	.min = 0,
	.max = 30 * DAY,
	TUNNEL_FIELD(audit_interval_ms),
	.placeholder = "DURATION",
	.help = "Time between two audits of the sidecar over the tunnel's own session (the "
		"first once the tunnel first comes up); 0 disables them. Each audit is the "
		"part of `moletun audit` that needs no second login: a session channel and a "
		"command on it, a pty, direct-tcpip to destinations that are not the tunnel's "
		"targets, Unix sockets (direct-streamlocal) and a remote listen (tcpip-forward) "
		"must all be refused. Channels close at once and nothing is sent to any "
		"destination; forwards and keepalives go on meanwhile. The verdict (sidecar: "
		"hardened, not_hardened or unknown) shows in status and metrics, and a change to "
		"not_hardened raises an audit_failed alert.",
    },
};

static const struct config_key alert_keys[] = {
    {
	.name = "url",
	.type = CONFIG_TYPE_URL,
	.flags = CONFIG_KEY_SECRET,
	ALERT_FIELD(url),
	.placeholder = "URL",
	.help = "http:// or https:// webhook to POST each event to (certificates are always "
		"verified). Exactly one of url and exec. Never shown in full: it often "
		"holds a token.",
    },
    {
	.name = "exec",
	.type = CONFIG_TYPE_PATH,
	ALERT_FIELD(exec),
	.placeholder = "PATH",
	.help = "Program run for each event, without a shell, with MOLETUN_EVENT (down, up, "
		"target_down, target_up, degraded, recovered, metrics_stale, metrics_fresh or "
		"test), MOLETUN_TUNNEL, "
		"MOLETUN_REASON, MOLETUN_ALERT, MOLETUN_NODE, MOLETUN_HOST, MOLETUN_PORT, "
		"MOLETUN_SINCE, MOLETUN_TIMESTAMP, MOLETUN_DOWN_FOR_SECONDS and MOLETUN_JSON "
		"(the json payload) in its environment; the target and degraded events add "
		"MOLETUN_FORWARD and MOLETUN_TARGET (the forward's listen address and target, "
		"empty for degraded) and MOLETUN_RTT_MS (the smoothed keepalive RTT, empty "
		"until measured). Its process group is killed after timeout. Exactly one of "
		"url and exec.",
    },
    {
	.name = "format",
	.type = CONFIG_TYPE_ENUM,
	.default_value = "json",
	.choices = alert_format_choices,
	ALERT_FIELD(format),
	.placeholder = "json|slack|alertmanager",
	.help = "Body of the POST: moletun's own JSON object, a Slack message, or an "
		"Alertmanager v2 alert list (point url at /api/v2/alerts; re-sent every 60s "
		"while firing, with endsAt set on recovery). Alertmanager alert names: "
		"MoletunTunnelDown, MoletunTargetDown (labels forward and target too) and "
		"MoletunTunnelDegraded. Only with url.",
    },
    {
	.name = "down_after",
	.type = CONFIG_TYPE_DURATION,
	.default_value = "5s",
	.min = 0,
	.max = 24 * HOUR,
	ALERT_FIELD(down_after_ms),
	.placeholder = "DURATION",
	.help = "A down event is sent only when a tunnel has stayed down this long, so "
		"short flaps send nothing. Authentication and host key failures are sent at "
		"once. The same wait applies to target_down (a local forward's target "
		"unreachable) and degraded (smoothed RTT above degraded_rtt).",
    },
    {
	.name = "tunnels",
	.type = CONFIG_TYPE_WORDS,
	.flags = CONFIG_KEY_REPEATABLE,
	.max = FILTER_MAX,
	ALERT_FIELD(tunnels),
	.count_offset = offsetof(struct alert_config, n_tunnels),
	.placeholder = "NAME ...",
	.help = "Only these tunnels (space-separated names) raise this alert. Unset: all "
		"tunnels.",
    },
    {
	.name = "header",
	.type = CONFIG_TYPE_HEADER,
	.flags = CONFIG_KEY_REPEATABLE | CONFIG_KEY_SECRET,
	.max = HEADERS_MAX,
	ALERT_FIELD(headers),
	.count_offset = offsetof(struct alert_config, n_headers),
	.placeholder = "NAME: VALUE",
	.help = "Extra HTTP request header, for example an Authorization token. Never "
		"logged. Only with url.",
    },
    {
	.name = "timeout",
	.type = CONFIG_TYPE_DURATION,
	.default_value = "5s",
	.min = 100,
	.max = 5 * MINUTE,
	ALERT_FIELD(timeout_ms),
	.placeholder = "DURATION",
	.help = "Limit for one delivery attempt (HTTP request or program run).",
    },
    {
	.name = "send_resolved",
	.type = CONFIG_TYPE_BOOL,
	.default_value = "yes",
	ALERT_FIELD(send_resolved),
	.placeholder = "yes|no",
	.help = "Also send an up event, with the outage duration, when a tunnel that raised "
		"a down event recovers; likewise target_up after target_down and recovered "
		"after degraded.",
    },
};

static_assert(N_ELEMENTS(tunnel_keys) <= CONFIG_MAX_KEYS, "raise CONFIG_MAX_KEYS");
static_assert(N_ELEMENTS(alert_keys) <= CONFIG_MAX_KEYS, "raise CONFIG_MAX_KEYS");

const struct config_section_info config_sections[CONFIG_SECTION_COUNT] = {
    [CONFIG_SECTION_MOLETUN] =
	{
	    .name = "moletun",
	    .object_size = sizeof(struct config),
	    .keys = moletun_keys,
	    .n_keys = N_ELEMENTS(moletun_keys),
	    .help = "Daemon-wide settings. Optional; every key has a default.",
	},
    [CONFIG_SECTION_INCLUDE] =
	{
	    .name = "include",
	    .keys = include_keys,
	    .n_keys = N_ELEMENTS(include_keys),
	    .help = "Other files to read, for example one file per tunnel in a conf.d "
		    "directory. Relative paths are relative to the directory of the file "
		    "that names them.",
	},
    [CONFIG_SECTION_TUNNEL] =
	{
	    .name = "tunnel",
	    .named = true,
	    .object_size = sizeof(struct tunnel_config),
	    .keys = tunnel_keys,
	    .n_keys = N_ELEMENTS(tunnel_keys),
	    .help = "One SSH connection and the forwards it carries. NAME (letters, "
		    "digits, '.', '_' and '-', up to 64) appears in logs, moletun ctl "
		    "and alerts. A tunnel needs host, user, at least one forward, "
		    "identity_file or use_agent = yes, and known_hosts_file unless "
		    "strict_host_key_checking = no; ssh_host can give every one of them.",
	},
    [CONFIG_SECTION_ALERT] =
	{
	    .name = "alert",
	    .named = true,
	    .object_size = sizeof(struct alert_config),
	    .keys = alert_keys,
	    .n_keys = N_ELEMENTS(alert_keys),
	    .help = "A webhook or program told when tunnels go down and come back up.",
	},
};

const struct config_key *config_key_find(enum config_section section, const char *name)
{
	const struct config_section_info *s = &config_sections[section];

	for (size_t i = 0; i < s->n_keys; i++)
		if (strcmp(s->keys[i].name, name) == 0)
			return &s->keys[i];
	return NULL;
}

size_t config_key_index(enum config_section section, const struct config_key *key)
{
	return (size_t)(key - config_sections[section].keys);
}

const char *host_key_policy_str(enum host_key_policy p)
{
	for (const struct config_choice *c = host_key_choices; c->name; c++)
		if (c->value == (int)p)
			return c->name;
	return "?";
}

const char *alert_format_str(enum alert_format f)
{
	for (const struct config_choice *c = alert_format_choices; c->name; c++)
		if (c->value == (int)f)
			return c->name;
	return "?";
}
