#include "config_table.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "duration.h"
#include "fwdspec.h"
#include "jumpspec.h"
#include "log.h"

static_assert(sizeof(enum host_key_policy) == sizeof(int), "enum fields are set as int");
static_assert(sizeof(enum alert_format) == sizeof(int), "enum fields are set as int");

#define SECOND (1000ull)
#define MINUTE (60 * SECOND)
#define HOUR   (60 * MINUTE)
#define KIB    (1024ull)
#define MIB    (1024 * KIB)
#define GIB    (1024 * MIB)

/* sun_path holds 108 bytes including the terminating NUL. */
#define SOCKET_PATH_MAX	  107
#define HOST_NAME_MAX_LEN 255
#define USER_MAX_LEN	  127
#define FORWARDS_MAX	  256
#define HEADERS_MAX	  32
#define FILTER_MAX	  1024

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

static const char *const log_level_names[] = {"debug", "info", "notice", "warning", "err"};

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
	.default_value = "256M",
	.min = 0,
	.max = 64 * GIB,
	MOLETUN_FIELD(window_budget),
	.placeholder = "SIZE",
	.help = "Most receive window granted beyond each channel's first 512K, summed over "
		"every local_forward connection of every tunnel (see channel_window_max): data "
		"the server may send that clients have not read yet, which clients that stop "
		"reading leave in the daemon's memory. Past it windows stop growing; a window "
		"counts until its data is read or its connection closes. 0: windows never "
		"grow. K, M or G multiply by 1024.",
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
	.name = "host",
	.type = CONFIG_TYPE_HOST,
	.flags = CONFIG_KEY_REQUIRED,
	.max = HOST_NAME_MAX_LEN,
	TUNNEL_FIELD(host),
	.placeholder = "HOST",
	.help = "SSH server to connect to: a host name or an IPv4 or IPv6 address "
		"(without brackets).",
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
	.max = USER_MAX_LEN,
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
		"are owed (2 x 512K per open local_forward connection and twice what its "
		"window grew beyond that, 2 x 2M per remote_forward one, for data their "
		"clients have not read yet). Packets the "
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
		"moves at most one window per round trip: channels open with 512K and double "
		"theirs while a whole window arrives within about one round trip of the session "
		"and the client keeps up, and halve it back (not below 512K) when the client "
		"falls behind or the stream slows; all of them within the daemon's "
		"window_budget. 32M carries ~130 MB/s over a 250 ms round trip. 0 (or up to "
		"512K): windows stay at 512K. K, M or G multiply by 1024.",
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

#define N(a) (sizeof(a) / sizeof((a)[0]))

static_assert(N(tunnel_keys) <= CONFIG_MAX_KEYS, "raise CONFIG_MAX_KEYS");
static_assert(N(alert_keys) <= CONFIG_MAX_KEYS, "raise CONFIG_MAX_KEYS");

const struct config_section_info config_sections[CONFIG_SECTION_COUNT] = {
    [CONFIG_SECTION_MOLETUN] =
	{
	    .name = "moletun",
	    .object_size = sizeof(struct config),
	    .keys = moletun_keys,
	    .n_keys = N(moletun_keys),
	    .help = "Daemon-wide settings. Optional; every key has a default.",
	},
    [CONFIG_SECTION_INCLUDE] =
	{
	    .name = "include",
	    .keys = include_keys,
	    .n_keys = N(include_keys),
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
	    .n_keys = N(tunnel_keys),
	    .help = "One SSH connection and the forwards it carries. NAME (letters, "
		    "digits, '.', '_' and '-', up to 64) appears in logs, moletun ctl "
		    "and alerts. A tunnel needs host, user, at least one forward, "
		    "identity_file or use_agent = yes, and known_hosts_file unless "
		    "strict_host_key_checking = no.",
	},
    [CONFIG_SECTION_ALERT] =
	{
	    .name = "alert",
	    .named = true,
	    .object_size = sizeof(struct alert_config),
	    .keys = alert_keys,
	    .n_keys = N(alert_keys),
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

static void *field_of(const struct config_key *k, void *object)
{
	return (char *)object + k->offset;
}

static const void *const_field_of(const struct config_key *k, const void *object)
{
	return (const char *)object + k->offset;
}

static size_t *count_of(const struct config_key *k, void *object)
{
	return (size_t *)(void *)((char *)object + k->count_offset);
}

static size_t const_count_of(const struct config_key *k, const void *object)
{
	return *(const size_t *)(const void *)((const char *)object + k->count_offset);
}

static const struct file_digest *const_digest_of(const struct config_key *k, const void *object)
{
	return (const struct file_digest *)(const void *)((const char *)object + k->digest_offset);
}

static bool has_space(const char *s)
{
	for (; *s; s++)
		if (*s == ' ' || *s == '\t')
			return true;
	return false;
}

static bool is_name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == '-';
}

bool config_name_valid(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || len > CONFIG_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!is_name_char(name[i]))
			return false;
	return true;
}

static bool host_valid(const char *host)
{
	struct in6_addr addr;

	if (strchr(host, ':'))
		return inet_pton(AF_INET6, host, &addr) == 1;
	for (const char *p = host; *p; p++)
		if (!is_name_char(*p))
			return false;
	return true;
}

/* "https://" or "http://", then a host that does not start with '/'. */
static bool url_valid(const char *url)
{
	const char *rest;

	if (strncmp(url, "https://", 8) == 0)
		rest = url + 8;
	else if (strncmp(url, "http://", 7) == 0)
		rest = url + 7;
	else
		return false;
	return *rest && *rest != '/' && !has_space(url);
}

/* RFC 9110 token characters for the header name; the value must not be empty. */
static bool header_valid(const char *h)
{
	const char *p = h;

	while (*p && (is_name_char(*p) || strchr("!#$%&'*+^`|~", *p)))
		p++;
	if (p == h || *p != ':')
		return false;
	p++;
	while (*p == ' ' || *p == '\t')
		p++;
	return *p != '\0';
}

static int parse_number(const char *s, uint64_t *ret)
{
	uint64_t v = 0;

	if (!*s)
		return -EINVAL;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
			return -ERANGE;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*ret = v;
	return 0;
}

/* 33554432 -> "32M": the largest binary unit that divides the size exactly. */
static void size_format(uint64_t bytes, char *buf, size_t size)
{
	static const char suffixes[] = "KMG";
	int i = -1;

	while (i < 2 && bytes >= KIB && bytes % KIB == 0) {
		bytes /= KIB;
		i++;
	}
	if (i < 0)
		snprintf(buf, size, "%llu", (unsigned long long)bytes);
	else
		snprintf(buf, size, "%llu%c", (unsigned long long)bytes, suffixes[i]);
}

static int set_string(char **field, const char *value)
{
	char *copy = strdup(value);

	if (!copy)
		return -ENOMEM;
	free(*field);
	*field = copy;
	return 0;
}

static int set_path(const struct config_key *k, char **field, const char *value,
		    const char *base_dir, char *err, size_t err_size)
{
	char *path;

	if (value[0] == '~') {
		snprintf(err, err_size, "%s: '~' is not expanded, use an absolute path", k->name);
		return -EINVAL;
	}
	if (value[0] == '/' || !base_dir) {
		path = strdup(value);
	} else if (asprintf(&path, "%s/%s", base_dir, value) < 0) {
		path = NULL;
	}
	if (!path)
		return -ENOMEM;
	if (k->max && strlen(path) > k->max) {
		snprintf(err, err_size, "%s path too long (max %llu characters)", k->name,
			 (unsigned long long)k->max);
		free(path);
		return -EINVAL;
	}
	free(*field);
	*field = path;
	return 0;
}

static int set_duration(const struct config_key *k, uint64_t *field, const char *value, char *err,
			size_t err_size)
{
	char limit[32];
	uint64_t ms;
	int r = duration_parse(value, &ms);

	if (r == -ERANGE) {
		snprintf(err, err_size, "duration '%s' for %s is too large", value, k->name);
		return r;
	}
	if (r < 0) {
		snprintf(err, err_size, "invalid duration '%s' for %s", value, k->name);
		return r;
	}
	if (ms < k->min) {
		duration_format(k->min, limit, sizeof(limit));
		snprintf(err, err_size, "%s must be at least %s (got %s)", k->name, limit, value);
		return -ERANGE;
	}
	if (k->max && ms > k->max) {
		duration_format(k->max, limit, sizeof(limit));
		snprintf(err, err_size, "%s must be at most %s (got %s)", k->name, limit, value);
		return -ERANGE;
	}
	*field = ms;
	return 0;
}

static int set_uint(const struct config_key *k, void *field, const char *value, char *err,
		    size_t err_size)
{
	uint64_t v;
	int r = parse_number(value, &v);

	if (k->type == CONFIG_TYPE_PORT && (r < 0 || v < k->min || v > k->max)) {
		snprintf(err, err_size, "invalid port '%s' for %s (1..65535)", value, k->name);
		return -EINVAL;
	}
	if (r == -EINVAL) {
		snprintf(err, err_size, "invalid number '%s' for %s", value, k->name);
		return r;
	}
	if (r < 0 || v < k->min || v > k->max) {
		snprintf(err, err_size, "%s must be between %llu and %llu (got %s)", k->name,
			 (unsigned long long)k->min, (unsigned long long)k->max, value);
		return -ERANGE;
	}
	if (k->type == CONFIG_TYPE_PORT)
		*(uint16_t *)field = (uint16_t)v;
	else
		*(unsigned *)field = (unsigned)v;
	return 0;
}

/* "32M" -> 33554432: a number with an optional binary K, M or G suffix. */
static int set_size(const struct config_key *k, void *field, const char *value, char *err,
		    size_t err_size)
{
	static const struct {
		char suffix;
		uint64_t unit;
	} units[] = {{'K', KIB}, {'M', MIB}, {'G', GIB}};
	char digits[32];
	size_t len = strlen(value);
	uint64_t unit = 1, v;
	int r;

	if (len == 0 || len >= sizeof(digits)) {
		snprintf(err, err_size, "invalid size '%s' for %s", value, k->name);
		return -EINVAL;
	}
	memcpy(digits, value, len + 1);
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (digits[len - 1] == units[i].suffix ||
		    digits[len - 1] == units[i].suffix - 'A' + 'a') {
			unit = units[i].unit;
			digits[--len] = '\0';
		}
	}
	r = parse_number(digits, &v);
	if (r == -EINVAL) {
		snprintf(err, err_size, "invalid size '%s' for %s (expected e.g. 32M)", value,
			 k->name);
		return r;
	}
	if (r < 0 || v > UINT64_MAX / unit || v * unit < k->min || v * unit > k->max) {
		char lo[32], hi[32];

		size_format(k->min, lo, sizeof(lo));
		size_format(k->max, hi, sizeof(hi));
		snprintf(err, err_size, "%s must be between %s and %s (got %s)", k->name, lo, hi,
			 value);
		return -ERANGE;
	}
	*(uint64_t *)field = v * unit;
	return 0;
}

/* Writes "a, b or c" for the choices of an enum. */
static void choices_text(const char *const *names, size_t n, char *buf, size_t size)
{
	size_t used = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < n && used < size; i++) {
		const char *sep = i == 0 ? "" : i + 1 == n ? " or " : ", ";
		int r = snprintf(buf + used, size - used, "%s%s", sep, names[i]);

		if (r < 0)
			return;
		used += (size_t)r;
	}
}

static int set_enum(const struct config_key *k, int *field, const char *value, char *err,
		    size_t err_size)
{
	const char *names[8];
	char expected[128];
	size_t n = 0;

	for (const struct config_choice *c = k->choices; c->name; c++) {
		if (strcmp(c->name, value) == 0) {
			*field = c->value;
			return 0;
		}
		if (n < N(names))
			names[n++] = c->name;
	}
	choices_text(names, n, expected, sizeof(expected));
	snprintf(err, err_size, "invalid value '%s' for %s (expected %s)", value, k->name,
		 expected);
	return -EINVAL;
}

static int set_log_level(const struct config_key *k, int *field, const char *value, char *err,
			 size_t err_size)
{
	char expected[128];
	int level = log_level_from_str(value);

	if (level < 0) {
		choices_text(log_level_names, N(log_level_names), expected, sizeof(expected));
		snprintf(err, err_size, "invalid value '%s' for %s (expected %s)", value, k->name,
			 expected);
		return -EINVAL;
	}
	*field = level;
	return 0;
}

/* realloc() with room for one more item; NULL (the old array intact) when out of memory. */
static void *array_grow(void *array, size_t count, size_t item_size)
{
	if (count >= SIZE_MAX / item_size - 1)
		return NULL;
	return realloc(array, (count + 1) * item_size);
}

static int add_forward(const struct config_key *k, void *object, const char *value, char *err,
		       size_t err_size)
{
	struct forward_spec **forwards = field_of(k, object), *grown, spec;
	size_t *count = count_of(k, object);
	char reason[160];

	if (fwdspec_parse((enum forward_kind)k->forward_kind, value, &spec, reason,
			  sizeof(reason)) < 0) {
		snprintf(err, err_size, "invalid %s '%s': %s", k->name, value, reason);
		return -EINVAL;
	}
	if (k->max && *count >= k->max) {
		snprintf(err, err_size, "too many forwards (max %llu)", (unsigned long long)k->max);
		return -E2BIG;
	}
	grown = array_grow(*forwards, *count, sizeof(spec));
	if (!grown)
		return -ENOMEM;
	*forwards = grown;
	(*forwards)[(*count)++] = spec;
	return 0;
}

static int add_string(const struct config_key *k, void *object, const char *value)
{
	char ***items = field_of(k, object);
	size_t *count = count_of(k, object);
	char *copy = strdup(value), **grown = array_grow(*items, *count, sizeof(*grown));

	if (!grown) {
		free(copy);
		return -ENOMEM;
	}
	*items = grown;
	if (!copy)
		return -ENOMEM;
	(*items)[(*count)++] = copy;
	return 0;
}

static int add_words(const struct config_key *k, void *object, const char *value, char *err,
		     size_t err_size)
{
	char word[CONFIG_NAME_MAX + 2];
	const char *p = value;

	while (*p) {
		size_t len;
		int r;

		p += strspn(p, " \t");
		len = strcspn(p, " \t");
		if (len == 0)
			break;
		snprintf(word, sizeof(word), "%.*s", (int)len, p);
		p += len;
		if (len > CONFIG_NAME_MAX || !config_name_valid(word)) {
			snprintf(err, err_size, "invalid tunnel name '%s' in %s", word, k->name);
			return -EINVAL;
		}
		if (k->max && *count_of(k, object) >= k->max) {
			snprintf(err, err_size, "too many names in %s (max %llu)", k->name,
				 (unsigned long long)k->max);
			return -E2BIG;
		}
		r = add_string(k, object, word);
		if (r < 0)
			return r;
	}
	return 0;
}

/* The whole list at once ("" and none: direct); the key is not repeatable. */
static int set_jump(const struct config_key *k, void *object, const char *value, char *err,
		    size_t err_size)
{
	struct jump_hop **hops = field_of(k, object), *parsed;
	size_t *count = count_of(k, object), n;
	char reason[160];
	int r = jumpspec_parse(value, &parsed, &n, reason, sizeof(reason));

	if (r == -ENOMEM)
		return r;
	if (r < 0) {
		snprintf(err, err_size, "invalid %s '%s': %s", k->name, value, reason);
		return r;
	}
	jumpspec_free(*hops, *count);
	*hops = parsed;
	*count = n;
	return 0;
}

int config_key_set(const struct config_key *k, void *object, const char *value,
		   const char *base_dir, char *err, size_t err_size)
{
	void *field = field_of(k, object);
	size_t len = strlen(value);

	if (k->type == CONFIG_TYPE_JUMP)
		return set_jump(k, object, value, err, err_size);
	if (len == 0) {
		snprintf(err, err_size, "empty value for %s", k->name);
		return -EINVAL;
	}
	switch (k->type) {
	case CONFIG_TYPE_STRING:
	case CONFIG_TYPE_TEXT:
		if (k->type == CONFIG_TYPE_STRING && has_space(value)) {
			snprintf(err, err_size, "invalid %s '%s' (no spaces allowed)", k->name,
				 value);
			return -EINVAL;
		}
		if (k->max && len > k->max) {
			snprintf(err, err_size, "%s too long (max %llu characters)", k->name,
				 (unsigned long long)k->max);
			return -EINVAL;
		}
		return set_string(field, value);
	case CONFIG_TYPE_HOST:
		if (len > k->max || !host_valid(value)) {
			snprintf(err, err_size, "invalid host name '%s' for %s", value, k->name);
			return -EINVAL;
		}
		return set_string(field, value);
	case CONFIG_TYPE_URL:
		if (!url_valid(value)) {
			snprintf(err, err_size,
				 "invalid %s (expected http:// or https:// and a host)", k->name);
			return -EINVAL;
		}
		return set_string(field, value);
	case CONFIG_TYPE_PATH:
		return set_path(k, field, value, base_dir, err, err_size);
	case CONFIG_TYPE_PORT:
	case CONFIG_TYPE_UINT:
		return set_uint(k, field, value, err, err_size);
	case CONFIG_TYPE_BOOL:
		if (strcmp(value, "yes") == 0 || strcmp(value, "no") == 0) {
			*(bool *)field = value[0] == 'y';
			return 0;
		}
		snprintf(err, err_size, "invalid value '%s' for %s (expected yes or no)", value,
			 k->name);
		return -EINVAL;
	case CONFIG_TYPE_DURATION:
		return set_duration(k, field, value, err, err_size);
	case CONFIG_TYPE_SIZE:
		return set_size(k, field, value, err, err_size);
	case CONFIG_TYPE_ENUM:
		return set_enum(k, field, value, err, err_size);
	case CONFIG_TYPE_LOG_LEVEL:
		return set_log_level(k, field, value, err, err_size);
	case CONFIG_TYPE_FORWARD:
		return add_forward(k, object, value, err, err_size);
	case CONFIG_TYPE_WORDS:
		return add_words(k, object, value, err, err_size);
	case CONFIG_TYPE_HEADER:
		if (!header_valid(value)) {
			snprintf(err, err_size, "invalid %s (expected 'Name: value')", k->name);
			return -EINVAL;
		}
		if (k->max && *count_of(k, object) >= k->max) {
			snprintf(err, err_size, "too many %s lines (max %llu)", k->name,
				 (unsigned long long)k->max);
			return -E2BIG;
		}
		return add_string(k, object, value);
	case CONFIG_TYPE_JUMP:
	case CONFIG_TYPE_INCLUDE:
		break;
	}
	snprintf(err, err_size, "%s cannot be set here", k->name);
	return -EINVAL;
}

static void key_free(const struct config_key *k, void *object)
{
	void *field = field_of(k, object);

	switch (k->type) {
	case CONFIG_TYPE_STRING:
	case CONFIG_TYPE_TEXT:
	case CONFIG_TYPE_HOST:
	case CONFIG_TYPE_URL:
	case CONFIG_TYPE_PATH:
		free(*(char **)field);
		*(char **)field = NULL;
		break;
	case CONFIG_TYPE_FORWARD:
		/* local_forward and remote_forward share the array: the second sees NULL. */
		free(*(struct forward_spec **)field);
		*(struct forward_spec **)field = NULL;
		*count_of(k, object) = 0;
		break;
	case CONFIG_TYPE_JUMP:
		jumpspec_free(*(struct jump_hop **)field, *count_of(k, object));
		*(struct jump_hop **)field = NULL;
		*count_of(k, object) = 0;
		break;
	case CONFIG_TYPE_WORDS:
	case CONFIG_TYPE_HEADER: {
		char **items = *(char ***)field;
		size_t *count = count_of(k, object);

		for (size_t i = 0; i < *count; i++)
			free(items[i]);
		free(items);
		*(char ***)field = NULL;
		*count = 0;
		break;
	}
	default:
		break;
	}
}

void config_section_free(enum config_section section, void *object)
{
	const struct config_section_info *s = &config_sections[section];

	if (!object)
		return;
	for (size_t i = 0; i < s->n_keys; i++)
		key_free(&s->keys[i], object);
}

int config_section_defaults(enum config_section section, void *object)
{
	const struct config_section_info *s = &config_sections[section];
	char err[256];

	for (size_t i = 0; i < s->n_keys; i++) {
		const struct config_key *k = &s->keys[i];
		int r;

		if (!k->default_value)
			continue;
		r = config_key_set(k, object, k->default_value, NULL, err, sizeof(err));
		if (r < 0)
			return r;
	}
	return 0;
}

void config_key_format(const struct config_key *k, const void *object, char *buf, size_t size)
{
	const void *field = const_field_of(k, object);

	if (size == 0)
		return;
	buf[0] = '\0';
	switch (k->type) {
	case CONFIG_TYPE_STRING:
	case CONFIG_TYPE_TEXT:
	case CONFIG_TYPE_HOST:
	case CONFIG_TYPE_URL:
	case CONFIG_TYPE_PATH: {
		const char *s = *(char *const *)field;

		snprintf(buf, size, "%s", s ? s : "");
		break;
	}
	case CONFIG_TYPE_PORT:
		snprintf(buf, size, "%u", (unsigned)*(const uint16_t *)field);
		break;
	case CONFIG_TYPE_UINT:
		snprintf(buf, size, "%u", *(const unsigned *)field);
		break;
	case CONFIG_TYPE_BOOL:
		snprintf(buf, size, "%s", *(const bool *)field ? "yes" : "no");
		break;
	case CONFIG_TYPE_DURATION:
		duration_format(*(const uint64_t *)field, buf, size);
		break;
	case CONFIG_TYPE_SIZE:
		size_format(*(const uint64_t *)field, buf, size);
		break;
	case CONFIG_TYPE_ENUM:
		for (const struct config_choice *c = k->choices; c->name; c++)
			if (c->value == *(const int *)field)
				snprintf(buf, size, "%s", c->name);
		break;
	case CONFIG_TYPE_LOG_LEVEL:
		snprintf(buf, size, "%s", log_level_str(*(const int *)field));
		break;
	case CONFIG_TYPE_WORDS: {
		char *const *items = *(char **const *)field;
		size_t used = 0, n = const_count_of(k, object);

		for (size_t i = 0; i < n && used < size; i++) {
			int r = snprintf(buf + used, size - used, "%s%s", i ? " " : "", items[i]);

			if (r < 0)
				break;
			used += (size_t)r;
		}
		break;
	}
	case CONFIG_TYPE_JUMP:
		jumpspec_format(*(struct jump_hop *const *)field, const_count_of(k, object), buf,
				size);
		break;
	case CONFIG_TYPE_FORWARD:
	case CONFIG_TYPE_HEADER:
		snprintf(buf, size, "%zu", const_count_of(k, object));
		break;
	case CONFIG_TYPE_INCLUDE:
		break;
	}
}

static bool strings_equal(const char *a, const char *b)
{
	if (!a || !b)
		return a == b;
	return strcmp(a, b) == 0;
}

static bool forwards_equal(const struct forward_spec *a, const struct forward_spec *b)
{
	return a->kind == b->kind && a->listen_port == b->listen_port &&
	       a->target_port == b->target_port && strcmp(a->listen_host, b->listen_host) == 0 &&
	       strcmp(a->target_host, b->target_host) == 0;
}

bool config_key_equal(const struct config_key *k, const void *a, const void *b)
{
	const void *fa = const_field_of(k, a), *fb = const_field_of(k, b);

	switch (k->type) {
	case CONFIG_TYPE_STRING:
	case CONFIG_TYPE_TEXT:
	case CONFIG_TYPE_HOST:
	case CONFIG_TYPE_URL:
	case CONFIG_TYPE_PATH:
		return strings_equal(*(char *const *)fa, *(char *const *)fb);
	case CONFIG_TYPE_PORT:
		return *(const uint16_t *)fa == *(const uint16_t *)fb;
	case CONFIG_TYPE_UINT:
		return *(const unsigned *)fa == *(const unsigned *)fb;
	case CONFIG_TYPE_BOOL:
		return *(const bool *)fa == *(const bool *)fb;
	case CONFIG_TYPE_DURATION:
	case CONFIG_TYPE_SIZE:
		return *(const uint64_t *)fa == *(const uint64_t *)fb;
	case CONFIG_TYPE_ENUM:
	case CONFIG_TYPE_LOG_LEVEL:
		return *(const int *)fa == *(const int *)fb;
	case CONFIG_TYPE_FORWARD: {
		const struct forward_spec *x = *(struct forward_spec *const *)fa;
		const struct forward_spec *y = *(struct forward_spec *const *)fb;
		size_t n = const_count_of(k, a);

		if (n != const_count_of(k, b))
			return false;
		for (size_t i = 0; i < n; i++)
			if (!forwards_equal(&x[i], &y[i]))
				return false;
		return true;
	}
	case CONFIG_TYPE_JUMP:
		return jumpspec_equal(*(struct jump_hop *const *)fa, const_count_of(k, a),
				      *(struct jump_hop *const *)fb, const_count_of(k, b));
	case CONFIG_TYPE_WORDS:
	case CONFIG_TYPE_HEADER: {
		char *const *x = *(char **const *)fa;
		char *const *y = *(char **const *)fb;
		size_t n = const_count_of(k, a);

		if (n != const_count_of(k, b))
			return false;
		for (size_t i = 0; i < n; i++)
			if (strcmp(x[i], y[i]) != 0)
				return false;
		return true;
	}
	case CONFIG_TYPE_INCLUDE:
		break;
	}
	return true;
}

bool config_key_contents_equal(const struct config_key *k, const void *a, const void *b)
{
	if (!(k->flags & CONFIG_KEY_CONTENTS))
		return true;
	return file_digest_equal(const_digest_of(k, a), const_digest_of(k, b));
}

bool config_key_is_default(const struct config_key *k, const void *object)
{
	/* Big enough and aligned for any section struct. */
	union {
		struct config c;
		struct tunnel_config t;
		struct alert_config a;
	} scratch;
	char err[256];
	bool same;

	if (!k->default_value)
		return false;
	memset(&scratch, 0, sizeof(scratch));
	if (config_key_set(k, &scratch, k->default_value, NULL, err, sizeof(err)) < 0)
		return false;
	same = config_key_equal(k, object, &scratch);
	key_free(k, &scratch);
	return same;
}

/* man(7) text: a leading '.' or '\'' would be a request, '-' must be a real hyphen-minus. */
static void man_text(FILE *out, const char *s)
{
	if (*s == '.' || *s == '\'')
		fputs("\\&", out);
	for (; *s; s++) {
		if (*s == '\\')
			fputs("\\e", out);
		else if (*s == '-')
			fputs("\\-", out);
		else
			fputc(*s, out);
	}
}

static void man_key(FILE *out, const struct config_key *k)
{
	char limit[32];

	fputs(".TP\n\\fB", out);
	man_text(out, k->name);
	fputs("\\fR = \\fI", out);
	man_text(out, k->placeholder);
	fputs("\\fR\n", out);
	man_text(out, k->help);
	fputc('\n', out);
	if (k->flags & CONFIG_KEY_REQUIRED)
		fputs("Required.\n", out);
	if (k->flags & CONFIG_KEY_REPEATABLE)
		fputs("May be given more than once.\n", out);
	if (k->type == CONFIG_TYPE_DURATION) {
		duration_format(k->min, limit, sizeof(limit));
		fputs("From ", out);
		man_text(out, limit);
		duration_format(k->max, limit, sizeof(limit));
		fputs(" to ", out);
		man_text(out, limit);
		fputs(".\n", out);
	} else if (k->type == CONFIG_TYPE_UINT) {
		fprintf(out, "From %llu to %llu.\n", (unsigned long long)k->min,
			(unsigned long long)k->max);
	} else if (k->type == CONFIG_TYPE_SIZE) {
		size_format(k->min, limit, sizeof(limit));
		fprintf(out, "From %s", limit);
		size_format(k->max, limit, sizeof(limit));
		fprintf(out, " to %s.\n", limit);
	}
	if (k->default_value) {
		fputs("Default: \\fB", out);
		man_text(out, k->default_value);
		fputs("\\fR.\n", out);
	}
}

/* The first sentence of a help text: up to ". " or its end, at most `max` bytes. */
static int first_sentence_len(const char *help, int max)
{
	const char *end = strstr(help, ". ");
	int len = end ? (int)(end - help) + 1 : (int)strlen(help);

	return len < max ? len : max;
}

/* "default 5s, 1s to 1h; required; repeatable" for one key: what a reader checks first. */
static void text_key_facts(const struct config_key *k, char *buf, size_t size)
{
	char lo[32], hi[32];
	size_t used = 0;

#define FACT(...)                                                                            \
	do {                                                                                 \
		int n_ = snprintf(buf + used, size - used, "%s", used ? ", " : "");          \
		if (n_ > 0 && (size_t)n_ < size - used)                                      \
			used += (size_t)n_;                                                  \
		n_ = snprintf(buf + used, size - used, __VA_ARGS__);                         \
		if (n_ > 0 && (size_t)n_ < size - used)                                      \
			used += (size_t)n_;                                                  \
	} while (0)
	buf[0] = '\0';
	if (k->default_value)
		FACT("default %s", k->default_value);
	if (k->type == CONFIG_TYPE_DURATION) {
		duration_format(k->min, lo, sizeof(lo));
		duration_format(k->max, hi, sizeof(hi));
		FACT("%s to %s", lo, hi);
	} else if (k->type == CONFIG_TYPE_UINT) {
		FACT("%llu to %llu", (unsigned long long)k->min, (unsigned long long)k->max);
	} else if (k->type == CONFIG_TYPE_SIZE) {
		size_format(k->min, lo, sizeof(lo));
		size_format(k->max, hi, sizeof(hi));
		FACT("%s to %s", lo, hi);
	}
	if (k->flags & CONFIG_KEY_REQUIRED)
		FACT("required");
	if (k->flags & CONFIG_KEY_REPEATABLE)
		FACT("repeatable");
#undef FACT
}

/* `len` bytes of `text`, indented by `indent` and broken at blanks before `width`. */
static void print_wrapped(FILE *out, int indent, const char *text, int len, int width)
{
	int start = 0;

	while (start < len) {
		int end = len, room = width - indent;

		if (len - start > room) {
			end = start + room;
			while (end > start && text[end] != ' ')
				end--;
			if (end == start) /* one word longer than the line */
				end = start + room;
		}
		fprintf(out, "%*s%.*s\n", indent, "", end - start, text + start);
		start = end;
		while (start < len && text[start] == ' ')
			start++;
	}
}

void config_print_keys_text(FILE *out)
{
	for (size_t s = 0; s < CONFIG_SECTION_COUNT; s++) {
		const struct config_section_info *sec = &config_sections[s];

		fprintf(out, "%s[%s%s]  %.*s\n", s ? "\n" : "", sec->name, sec->named ? ":NAME" : "",
			first_sentence_len(sec->help, 200), sec->help);
		for (size_t i = 0; i < sec->n_keys; i++) {
			const struct config_key *k = &sec->keys[i];
			char facts[160];

			text_key_facts(k, facts, sizeof(facts));
			fprintf(out, "  %s = %s%s%s%s\n", k->name, k->placeholder, facts[0] ? "  (" : "",
				facts, facts[0] ? ")" : "");
			print_wrapped(out, 6, k->help, first_sentence_len(k->help, 400), 88);
		}
	}
	fputs("\nThe whole text of every key: man 5 moletun.conf\n", out);
}

void config_print_man_keys(FILE *out)
{
	for (size_t s = 0; s < CONFIG_SECTION_COUNT; s++) {
		const struct config_section_info *sec = &config_sections[s];

		fprintf(out, ".SS \"[%s%s]\"\n", sec->name, sec->named ? ":\\fINAME\\fP" : "");
		man_text(out, sec->help);
		fputc('\n', out);
		for (size_t i = 0; i < sec->n_keys; i++)
			man_key(out, &sec->keys[i]);
	}
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
