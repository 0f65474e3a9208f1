#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "kexinit.h"

/*
 * The verdicts of a sidecar audit: what the sidecar allowed, judged check by check, with
 * what fixes each failure and where. Pure: the probes (cmd_audit.c, or one day the daemon
 * over its own live session) observe, and these functions judge what was observed; the
 * report prints as a table or as JSON.
 */

enum audit_result {
	AUDIT_PASS,
	AUDIT_WARN, /* allowed something a sidecar should not, that cannot be abused as such */
	AUDIT_FAIL,
	AUDIT_SKIP, /* not probed; says why */
};

/* Where a finding is fixed: the key line only reaches what key options can enforce. */
enum audit_fix_in {
	AUDIT_FIX_NONE,
	AUDIT_FIX_KEY,		/* the authorized_keys line (moletun authorize), or sshd_config */
	AUDIT_FIX_SSHD_CONFIG,	/* only the server's configuration can */
	AUDIT_FIX_MOLETUN_CONF, /* the tunnel's own configuration */
};

struct audit_finding {
	const char *check; /* stable name: "auth_methods", "direct_tcpip", ... */
	char subject[300]; /* what was probed ("127.0.0.1:22", a socket path), or "" */
	enum audit_result result;
	enum audit_fix_in fix_in;
	char detail[600];
	char fix[400]; /* "" when nothing is to fix */
};

struct audit_report {
	struct audit_finding *items;
	size_t n, cap;
	bool out_of_memory;
};

/* How a channel open was answered. libssh2 1.10 gives the reason code only as text. */
enum audit_open {
	AUDIT_OPENED,
	AUDIT_OPEN_PROHIBITED,	   /* SSH_OPEN_ADMINISTRATIVELY_PROHIBITED */
	AUDIT_OPEN_CONNECT_FAILED, /* SSH_OPEN_CONNECT_FAILED */
	AUDIT_OPEN_UNKNOWN_TYPE,   /* SSH_OPEN_UNKNOWN_CHANNEL_TYPE */
	AUDIT_OPEN_OTHER,	   /* resource shortage, or no reason given */
};

/* The reason in libssh2 1.10's message ("Channel open failure (connect failed)"). */
enum audit_open audit_open_from_message(const char *message);
const char *audit_open_str(enum audit_open o);

/* What a session channel did with a harmless command (see audit_judge_session). */
struct audit_session {
	bool opened;	    /* the session channel opened */
	bool exec_accepted; /* the exec request was granted */
	bool marker_seen;   /* the command's output came back: a shell ran it */
	bool ended;	    /* the command ended within the time it was given */
	int exit_status;    /* -1 when none was sent */
	char output[160];   /* the start of what it printed, printable characters only */
};

enum audit_pty {
	AUDIT_PTY_NO_SESSION, /* no session channel to ask on */
	AUDIT_PTY_REFUSED,
	AUDIT_PTY_GRANTED,
};

enum audit_sftp {
	AUDIT_SFTP_NO_SESSION,
	AUDIT_SFTP_REFUSED,  /* no SFTP server answered (refused, or a forced command ran) */
	AUDIT_SFTP_ANSWERED, /* an SFTP server answered its version: files are reachable */
};

/* Whether direct-tcpip is limited to listed destinations, from the non-target probes. */
enum audit_forwarding {
	AUDIT_FORWARDING_UNKNOWN,
	AUDIT_FORWARDING_RESTRICTED,   /* every non-target was administratively prohibited */
	AUDIT_FORWARDING_UNRESTRICTED, /* sshd connected, or tried to */
};

void audit_report_init(struct audit_report *r);
void audit_report_finish(struct audit_report *r);

/* Appends a finding; detail is printf-style. Out of memory sets r->out_of_memory. */
void audit_add(struct audit_report *r, const char *check, const char *subject,
	       enum audit_result result, enum audit_fix_in fix_in, const char *fix, const char *fmt,
	       ...) __attribute__((format(printf, 7, 8)));

/* algorithms.kex, .ciphers, .macs, .host_key: SHA-1 key exchange, CBC (and other broken)
 * ciphers, SHA-1/MD5 MACs and SHA-1 signatures (ssh-rsa) fail. */
void audit_judge_algorithms(struct audit_report *r, const struct kexinit *k);
/* host_key: the sidecar's key ("ssh-ed25519 SHA256:..."); DSA fails, a key known_hosts
 * did not vouch for warns. */
void audit_judge_host_key(struct audit_report *r, const char *description, bool verified);
/* auth_methods: what the server offered after "none" (NULL: "none" itself was accepted). */
void audit_judge_auth_methods(struct audit_report *r, const char *methods);
/* session: refused passes; a forced command warns; running our command fails. */
void audit_judge_session(struct audit_report *r, const struct audit_session *s);
void audit_judge_pty(struct audit_report *r, enum audit_pty p);
/* sftp: the subsystem runs even for a user whose shell is nologin (internal-sftp). */
void audit_judge_sftp(struct audit_report *r, enum audit_sftp s);
/* direct_tcpip to a destination that is not one of the tunnel's targets. */
void audit_judge_direct_tcpip(struct audit_report *r, const char *dest, enum audit_open o);
/* What the answers for non-targets say about forwarding as a whole. */
enum audit_forwarding audit_forwarding_of(const enum audit_open *non_targets, size_t n);
/* target: one of the tunnel's own targets, which must open. */
void audit_judge_target(struct audit_report *r, const char *dest, enum audit_open o);
/* direct_streamlocal to a Unix socket on the sidecar. OpenSSH answers "connect failed"
 * both when it refuses and when nothing listens: a refusal proves something only when
 * forwarding is restricted to listed destinations (sockets never match one). */
void audit_judge_streamlocal(struct audit_report *r, const char *path, enum audit_open o,
			     enum audit_forwarding forwarding);
/* tcpip_forward: a listen the tunnel does not configure (`listen`) must be refused. */
void audit_judge_tcpip_forward(struct audit_report *r, const char *listen, bool granted,
			       unsigned bound_port, size_t n_remote_forwards);
/* streamlocal_forward: not probed (libssh2 1.10 cannot send it); says what stops it. */
void audit_note_streamlocal_forward(struct audit_report *r);

/* The worst result (SKIP counts as PASS). */
enum audit_result audit_report_worst(const struct audit_report *r);
const char *audit_result_str(enum audit_result result);
/* "authorized_keys", "sshd_config", "moletun.conf", or NULL. */
const char *audit_fix_in_str(enum audit_fix_in fix_in);

/* One line per finding: CHECK [SUBJECT]  RESULT  DETAIL[ | fix: FIX]; with a header. */
void audit_report_print_text(const struct audit_report *r, FILE *out);
/* A JSON array of {"check","subject","result","detail","fix_in","fix"}. */
void audit_report_print_json(const struct audit_report *r, FILE *out);
