#pragma once
#include <libssh2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "identity.h"
#include "jumpspec.h"
#include "kexinit.h"

/*
 * The way `moletun audit` reaches a tunnel's sidecar: its own credentials, host keys and
 * proxy_jump bastions, as the daemon's links use them, but in blocking libssh2 sessions
 * with timeouts. A one-shot command needs no event loop, and the audit must see what the
 * engine's links do not show: the server's KEXINIT (read on a connection of its own before
 * the key exchange) and the authentication methods offered after "none".
 *
 * Through bastions every session above the first runs over a direct-tcpip channel of the
 * one below, as the engine's path does: its send callback writes the whole buffer to that
 * channel (blocking), and its receive callback reads the channel without blocking, so
 * libssh2 waits on the one real socket (each session above holds a duplicate of it).
 */

enum audit_conn_failure {
	AUDIT_CONN_OK,
	AUDIT_CONN_CONFIG,  /* a key or known_hosts file cannot be used: exit 2 */
	AUDIT_CONN_NETWORK, /* cannot connect, or the server went away: exit 3 */
	AUDIT_CONN_REFUSED, /* host key or authentication refused: exit 3 */
};

enum audit_host_key {
	AUDIT_HOST_KEY_VERIFIED,
	AUDIT_HOST_KEY_UNVERIFIED, /* strict_host_key_checking = no */
	AUDIT_HOST_KEY_NEW,	   /* accept-new and not in the file: not recorded by audit */
};

struct audit_conn;

struct audit_hop {
	struct audit_conn *conn;
	size_t index;
	const char *host;
	uint16_t port;
	const char *user;
	const struct identity *identity; /* NULL: ssh-agent only */
	const char *identity_file;
	LIBSSH2_SESSION *session;
	LIBSSH2_CHANNEL *next; /* on this session, to the next hop's sshd */
	int fd;		       /* the socket; above the first hop a duplicate of it */
};

struct audit_conn {
	const struct tunnel_config *cfg;
	long timeout_ms; /* each blocking step: the tunnel's connect_timeout */
	struct identity identity, jump_identity;
	size_t n; /* bastions and the sidecar */
	struct audit_hop hops[JUMP_HOPS_MAX + 1];
	/* what was learned on the way, kept when a later step fails */
	struct kexinit kexinit;
	int kexinit_error;  /* 0 when kexinit holds the server's offer */
	char *auth_methods; /* after "none"; NULL with none_accepted */
	bool auth_listed;
	bool none_accepted;
	char host_key[160]; /* "ssh-ed25519 SHA256:..." */
	enum audit_host_key host_key_state;
	enum audit_conn_failure failure;
	char error[700];
};

/*
 * Loads the tunnel's keys, passes its bastions, reads the sidecar's KEXINIT on a
 * connection of its own, then connects, checks the host key, lists the authentication
 * methods and authenticates. 0, or -1 with c->failure and c->error set (what was learned
 * before stays in *c). Call audit_conn_close() in both cases.
 */
int audit_conn_open(struct audit_conn *c, const struct tunnel_config *t);
/* The authenticated session with the sidecar (blocking, c->timeout_ms per step). */
LIBSSH2_SESSION *audit_conn_session(const struct audit_conn *c);
/* Says goodbye on every hop, the sidecar first, and frees everything. */
void audit_conn_close(struct audit_conn *c);
