#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "diag.h"
#include "filedigest.h"

struct forward_spec; /* fwdspec.h */
struct jump_hop;     /* jumpspec.h */

#define CONFIG_DEFAULT_PATH "/etc/moletun/moletun.conf"
#define CONFIG_DEFAULT_CONTROL_SOCKET "/run/moletun/control.sock"

enum host_key_policy {
	HOST_KEY_STRICT,     /* "yes" */
	HOST_KEY_ACCEPT_NEW, /* "accept-new" */
	HOST_KEY_NO,         /* "no": loud warning */
};

/* How the targets of local forwards are probed through the live session. */
enum probe_mode {
	PROBE_TCP,	/* a direct-tcpip channel opens: the target accepted a connection */
	PROBE_POSTGRES, /* and answers PostgreSQL's SSLRequest with 'S' or 'N' */
	PROBE_NONE,
};

enum alert_format {
	ALERT_FORMAT_JSON,
	ALERT_FORMAT_SLACK,
	ALERT_FORMAT_ALERTMANAGER,
};

struct tunnel_config {
	char *name; /* after "tunnel:" */
	char *ssh_host;   /* an ssh_config alias whose values fill in the keys not set here */
	char *ssh_config; /* the file ssh -G reads instead of ~/.ssh/config and the system one */
	char *host;
	uint16_t port;
	char *user;
	char *identity_file;            /* NULL if unset */
	char *identity_passphrase_file; /* NULL if unset */
	bool use_agent;
	char *agent_socket;             /* NULL: $SSH_AUTH_SOCK */
	char *known_hosts_file;         /* NULL only when strict_host_key_checking = no */
	enum host_key_policy strict_host_key_checking;
	/* proxy_jump: the bastions passed through, first hop first (NULL and 0: direct). Every
	 * hop's user is set once loaded (the tunnel's user when the hop names none). */
	struct jump_hop *jump_hops;
	size_t n_jump_hops;
	char *jump_identity_file;            /* proxy_jump_identity_file, NULL if unset */
	char *jump_identity_passphrase_file; /* NULL if unset */
	struct forward_spec *forwards;  /* local and remote, in file order */
	size_t n_forwards;
	uint64_t connect_timeout_ms;
	uint64_t keepalive_interval_ms;
	unsigned keepalive_count_max;
	uint64_t backoff_initial_ms;
	uint64_t backoff_max_ms;
	uint64_t auth_retry_interval_ms;
	uint64_t down_hold_ms;
	uint64_t start_hold_ms; /* held until the first connection attempt ends */
	unsigned max_connections;       /* per forward */
	uint64_t session_memory_max;    /* bytes */
	uint64_t channel_window_max;	/* bytes; <= 256K: local_forward windows never grow */
	enum probe_mode probe;
	uint64_t probe_interval_ms;     /* 0: no probes */
	uint64_t probe_timeout_ms;
	uint64_t degraded_rtt_ms;       /* 0: never degraded */
	uint64_t audit_interval_ms;     /* 0: the daemon never audits the sidecar */
	/* Contents of the files above when loaded, so that a reload notices a file rewritten
	 * in place (zero when not recorded: unset, or see check_known_hosts in config_check.c). */
	struct file_digest identity_file_digest;
	struct file_digest identity_passphrase_file_digest;
	struct file_digest known_hosts_file_digest;
	struct file_digest jump_identity_file_digest;
	struct file_digest jump_identity_passphrase_file_digest;
	/* Per key of the tunnel table (bit = index): values taken from ssh -G for ssh_host, and
	 * keys set in the section although ssh_config had a value too. For check's output. */
	uint32_t ssh_config_keys;
	uint32_t ssh_config_overridden;
	char *file;                     /* where the section starts */
	unsigned line;
};

struct alert_config {
	char *name; /* after "alert:" */
	char *url;  /* NULL when exec is used */
	char *exec; /* NULL unless set */
	enum alert_format format;
	uint64_t down_after_ms;
	uint64_t timeout_ms;
	bool send_resolved;
	char **tunnels; /* filter; n_tunnels == 0 means all */
	size_t n_tunnels;
	char **headers; /* "Name: value", never logged */
	size_t n_headers;
	char *file;
	unsigned line;
};

struct config {
	char *path;
	char *control_socket;
	char *control_group; /* NULL: the daemon's own group */
	int log_level;       /* syslog priority: LOG_DEBUG .. LOG_ERR */
	char *metrics_textfile; /* NULL: none */
	uint64_t metrics_interval_ms;
	uint64_t window_budget; /* bytes of channel window granted beyond the first each */
	uint64_t memory_limit;	/* bytes: the memory account's limit (memacct.h) */
	struct tunnel_config *tunnels;
	size_t n_tunnels;
	struct alert_config *alerts;
	size_t n_alerts;
};

/*
 * Loads and validates `path` (and its includes). Every problem found is appended to
 * `diags` as "FILE:LINE: message". Returns 0 and a config in *ret, or -EINVAL when any
 * error was found (nothing in *ret), or another negative errno if `path` cannot be read.
 */
int config_load(const char *path, struct config **ret, struct diag *diags);

/* The keys a tunnel may hold. */
enum tunnel_key {
	TUNNEL_KEY_IDENTITY, /* identity_file (+ identity_passphrase_file) */
	TUNNEL_KEY_JUMP,     /* proxy_jump_identity_file (+ its passphrase file) */
};

/*
 * Checks a tunnel's key beyond what config_load() looks at (moletun check decrypts it with
 * its passphrase): 0, or -errno with a message in err ("identity file PATH: why").
 */
typedef int (*config_key_verifier)(const struct tunnel_config *t, enum tunnel_key which, char *err,
				   size_t err_size);

/*
 * config_load() that also runs `verify_key` for every key file of a tunnel (identity_file,
 * proxy_jump_identity_file) that passed the other checks together with its passphrase
 * file; a failure is reported at the line of the key file.
 */
int config_load_verified(const char *path, config_key_verifier verify_key, struct config **ret,
			 struct diag *diags);

/*
 * config_load() of `len` bytes of text (NUL bytes allowed) named `name` in diagnostics;
 * relative paths in it are taken from dirname(name). With !allow_includes an [include]
 * files key is an error instead of reading files, and ssh_host one instead of running
 * ssh -G. Used by tests and the fuzzer.
 */
int config_load_buffer(const char *name, const char *text, size_t len, bool allow_includes,
		       struct config **ret, struct diag *diags);
void config_free(struct config *c);

const struct tunnel_config *config_find_tunnel(const struct config *c, const char *name);

/* True when two tunnel sections would produce the same session and forwards. */
bool tunnel_config_equal(const struct tunnel_config *a, const struct tunnel_config *b);

/*
 * Why they would not: the name of the first key that differs ("keepalive_interval"), with
 * *ret_contents set when only the contents of the file it names differ; NULL when equal.
 */
const char *tunnel_config_diff(const struct tunnel_config *a, const struct tunnel_config *b,
			       bool *ret_contents);

/* Prints the one-line-per-tunnel summary `moletun check` shows on success. */
void config_print_summary(const struct config *c, FILE *out);

/*
 * Appends what the daemon should warn about at start (strict_host_key_checking = no, a
 * forward listening on every address, no tunnels) as "FILE:LINE: message".
 */
void config_warnings(const struct config *c, struct diag *out);

/* Prints the key reference (from the key table) as man(7) source for moletun.conf(5). */
void config_print_man_keys(FILE *out);
/* The same as plain text for `moletun help config`: per key its value, default, range and
 * the first sentence of its help. */
void config_print_keys_text(FILE *out);

const char *host_key_policy_str(enum host_key_policy p);
const char *alert_format_str(enum alert_format f);
