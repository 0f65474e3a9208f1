#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fd.h"
#include "hostkey.h"
#include "log.h"
#include "tunnel.h"

/* The connecting steps after TCP: handshake, host key, authentication, keepalive channel,
 * remote forward requests. Each step resumes after EAGAIN; connect_timeout bounds them all. */

bool ssh_error_fatal(int rc)
{
	switch (rc) {
	case LIBSSH2_ERROR_CHANNEL_OUTOFORDER:
	case LIBSSH2_ERROR_CHANNEL_FAILURE:
	case LIBSSH2_ERROR_CHANNEL_REQUEST_DENIED:
	case LIBSSH2_ERROR_CHANNEL_UNKNOWN:
	case LIBSSH2_ERROR_CHANNEL_WINDOW_EXCEEDED:
	case LIBSSH2_ERROR_CHANNEL_PACKET_EXCEEDED:
	case LIBSSH2_ERROR_CHANNEL_CLOSED:
	case LIBSSH2_ERROR_CHANNEL_EOF_SENT:
		return false;
	default:
		return true;
	}
}

const char *ssh_last_error(struct tunnel *t)
{
	char *msg = NULL;

	if (t->link.out_overflow)
		return "server is not reading: send buffer over its limit (16 MiB)";
	if (t->link.io_error)
		return t->link.io_error == ECONNRESET ? "connection closed by server"
						      : strerror(t->link.io_error);
	if (!t->link.session)
		return "no session";
	libssh2_session_last_error(t->link.session, &msg, NULL, 0);
	return msg && *msg ? msg : "unknown error";
}

const char *link_step_str(enum link_step step)
{
	static const char *const names[] = {
		[LINK_RESOLVING] = "resolving the host name",
		[LINK_TCP_CONNECT] = "TCP connect",
		[LINK_HANDSHAKE] = "SSH banner and key exchange",
		[LINK_AUTH_KEY] = "authentication",
		[LINK_AUTH_AGENT] = "authentication through ssh-agent",
		[LINK_KEEPALIVE_CHANNEL] = "opening the keepalive channel",
		[LINK_REMOTE_FORWARDS] = "requesting remote forwards",
		[LINK_READY] = "ready",
	};

	return (unsigned)step <= LINK_READY ? names[step] : "unknown step";
}

void link_setup_session(struct tunnel *t)
{
	const struct tunnel_config *cfg = t->cfg;
	char methods[256];

	/* libssh2 offers ecdsa first; ask for what known_hosts can actually verify. */
	hostkey_known_methods(t->link.session, cfg->known_hosts_file, cfg->host, cfg->port, methods,
			      sizeof(methods));
	if (methods[0])
		libssh2_session_method_pref(t->link.session, LIBSSH2_METHOD_HOSTKEY, methods);
}

static bool step_hostkey(struct tunnel *t)
{
	const struct tunnel_config *cfg = t->cfg;
	char err[512], desc[160];
	enum hostkey_verdict v;

	hostkey_describe(t->link.session, desc, sizeof(desc));
	if (cfg->strict_host_key_checking == HOST_KEY_NO) {
		log_warn("tunnel %s: host key NOT VERIFIED (strict_host_key_checking = no): %s",
			 cfg->name, desc);
		return true;
	}
	v = hostkey_check(t->link.session, cfg->known_hosts_file,
			  cfg->strict_host_key_checking == HOST_KEY_ACCEPT_NEW, cfg->host, cfg->port,
			  err, sizeof(err));
	switch (v) {
	case HOSTKEY_MATCH:
		log_debug("tunnel %s: host key verified: %s", cfg->name, desc);
		return true;
	case HOSTKEY_MISMATCH:
		log_err("tunnel %s: HOST KEY CHANGED for %s:%u: the server offered %s, which "
			"differs from %s; someone may be intercepting the connection, or the "
			"server was re-keyed. Not authenticating.",
			cfg->name, cfg->host, cfg->port, desc, cfg->known_hosts_file);
		tunnel_fail(t, true, "HOST KEY CHANGED (%s)", desc);
		return false;
	case HOSTKEY_NOT_FOUND:
		if (cfg->strict_host_key_checking == HOST_KEY_ACCEPT_NEW) {
			int r = hostkey_append(t->link.session, cfg->known_hosts_file, cfg->host,
					       cfg->port, err, sizeof(err));
			if (r < 0) {
				tunnel_fail(t, true, "cannot add host key to %s: %s",
					    cfg->known_hosts_file, err);
				return false;
			}
			log_notice("tunnel %s: added host key %s for %s:%u to %s", cfg->name, desc,
				   cfg->host, cfg->port, cfg->known_hosts_file);
			return true;
		}
		tunnel_fail(t, true, "host key %s for %s:%u not found in %s", desc, cfg->host,
			    cfg->port, cfg->known_hosts_file);
		return false;
	case HOSTKEY_ERROR:
	default:
		tunnel_fail(t, true, "%s", err);
		return false;
	}
}

static void fail_auth(struct tunnel *t, const char *how)
{
	const char *rsa_hint = "";

	if (strcmp(t->identity.key_type, "ssh-rsa") == 0)
		rsa_hint = " (libssh2 1.10 signs RSA keys only with SHA-1 ssh-rsa, which "
			   "OpenSSH >= 8.8 refuses: use an ed25519 or ECDSA key)";
	tunnel_fail(t, true, "authentication failed for %s@%s:%u (%s)%s", t->cfg->user,
		    t->cfg->host, t->cfg->port, how, rsa_hint);
}

/* Returns 1 when done, 0 to wait, -1 when the tunnel failed. */
static int step_auth_key(struct tunnel *t)
{
	const struct identity *id = &t->identity;
	int rc;

	rc = libssh2_userauth_publickey_frommemory(
		t->link.session, t->cfg->user, strlen(t->cfg->user), id->public_key,
		id->public_key ? id->public_len : 0, id->private_key, id->private_len,
		id->passphrase);
	if (rc == LIBSSH2_ERROR_EAGAIN)
		return 0;
	if (rc == 0)
		return 1;
	if (t->link.io_error || rc == LIBSSH2_ERROR_SOCKET_SEND ||
	    rc == LIBSSH2_ERROR_SOCKET_RECV || rc == LIBSSH2_ERROR_SOCKET_DISCONNECT ||
	    rc == LIBSSH2_ERROR_TIMEOUT) {
		tunnel_fail(t, false, "during authentication: %s", ssh_last_error(t));
		return -1;
	}
	if (t->cfg->use_agent) {
		log_info("tunnel %s: key %s not accepted (%s), trying ssh-agent", t->cfg->name,
			 t->cfg->identity_file, ssh_last_error(t));
		return 2;
	}
	{
		char how[300];

		snprintf(how, sizeof(how), "key %s: %s", t->cfg->identity_file, ssh_last_error(t));
		fail_auth(t, how);
	}
	return -1;
}

static int step_auth_agent(struct tunnel *t)
{
	struct link *l = &t->link;
	int rc;

	if (!l->agent) {
		const char *path = t->cfg->agent_socket;

		l->agent = libssh2_agent_init(l->session);
		if (!l->agent) {
			fail_auth(t, "ssh-agent: out of memory");
			return -1;
		}
		if (path)
			libssh2_agent_set_identity_path(l->agent, path);
		if (libssh2_agent_connect(l->agent) != 0) {
			fail_auth(t, "cannot connect to ssh-agent");
			return -1;
		}
		/* libssh2 1.10 opens the agent's socket without SOCK_CLOEXEC */
		fd_cloexec_from(3);
		if (libssh2_agent_list_identities(l->agent) != 0) {
			fail_auth(t, "cannot list ssh-agent identities");
			return -1;
		}
		if (libssh2_agent_get_identity(l->agent, &l->agent_identity, NULL) != 0) {
			fail_auth(t, "ssh-agent has no identities");
			return -1;
		}
	}
	for (;;) {
		rc = libssh2_agent_userauth(l->agent, t->cfg->user, l->agent_identity);
		if (rc == LIBSSH2_ERROR_EAGAIN)
			return 0;
		if (rc == 0)
			return 1;
		if (l->io_error) {
			tunnel_fail(t, false, "during authentication: %s", ssh_last_error(t));
			return -1;
		}
		if (libssh2_agent_get_identity(l->agent, &l->agent_identity, l->agent_identity) !=
		    0) {
			fail_auth(t, "no ssh-agent identity accepted");
			return -1;
		}
	}
}

/* Returns true when the session may continue, false when the tunnel failed. */
static bool step_keepalive_channel(struct tunnel *t)
{
	struct link *l = &t->link;
	int rc;

	l->keepalive_channel = libssh2_channel_open_session(l->session);
	if (l->keepalive_channel)
		return true;
	rc = libssh2_session_last_errno(l->session);
	if (rc == LIBSSH2_ERROR_EAGAIN)
		return false;
	if (l->io_error || ssh_error_fatal(rc)) {
		tunnel_fail(t, false, "opening keepalive channel: %s", ssh_last_error(t));
		return false;
	}
	/* e.g. MaxSessions 0: keepalives go as global requests instead. */
	log_notice("tunnel %s: server refused a session channel (%s); keepalives use global "
		   "requests",
		   t->cfg->name, ssh_last_error(t));
	libssh2_keepalive_config(l->session, 1, 1);
	return true;
}

/* Returns true when all remote forwards were requested. */
static bool step_remote_forwards(struct tunnel *t)
{
	struct link *l = &t->link;

	if (!l->remotes) {
		l->remotes = calloc(t->n_forwards, sizeof(*l->remotes));
		if (!l->remotes) {
			tunnel_fail(t, false, "out of memory");
			return false;
		}
	}
	for (; l->remote_next < t->n_forwards; l->remote_next++) {
		const struct forward_spec *f = &t->cfg->forwards[l->remote_next];
		struct remote_listener *r = &l->remotes[l->remote_next];
		int bound = 0, rc;

		r->forward = l->remote_next;
		if (f->kind != FORWARD_REMOTE)
			continue;
		r->listener = libssh2_channel_forward_listen_ex(l->session, f->listen_host,
								 f->listen_port, &bound, 16);
		if (r->listener)
			continue;
		rc = libssh2_session_last_errno(l->session);
		if (rc == LIBSSH2_ERROR_EAGAIN)
			return false;
		if (l->io_error || (ssh_error_fatal(rc) && rc != LIBSSH2_ERROR_REQUEST_DENIED)) {
			tunnel_fail(t, false, "requesting remote forward: %s", ssh_last_error(t));
			return false;
		}
		r->failed = true;
		t->stats[l->remote_next].open_failures++;
		log_err("tunnel %s: server refused remote forward %s:%u -> %s:%u (%s)",
			t->cfg->name, f->listen_host, f->listen_port, f->target_host,
			f->target_port, ssh_last_error(t));
	}
	return true;
}

void link_step(struct tunnel *t)
{
	struct link *l = &t->link;
	int rc;

	for (;;) {
		switch (l->step) {
		case LINK_RESOLVING:
		case LINK_TCP_CONNECT:
		case LINK_READY:
			return;
		case LINK_HANDSHAKE:
			rc = libssh2_session_handshake(l->session, l->fd);
			if (rc == LIBSSH2_ERROR_EAGAIN)
				return;
			if (rc) {
				tunnel_fail(t, false, "SSH handshake: %s", ssh_last_error(t));
				return;
			}
			if (!step_hostkey(t))
				return;
			l->step = t->cfg->identity_file ? LINK_AUTH_KEY : LINK_AUTH_AGENT;
			break;
		case LINK_AUTH_KEY:
			rc = step_auth_key(t);
			if (rc <= 0)
				return;
			l->step = rc == 2 ? LINK_AUTH_AGENT : LINK_KEEPALIVE_CHANNEL;
			break;
		case LINK_AUTH_AGENT:
			rc = step_auth_agent(t);
			if (rc <= 0)
				return;
			l->step = LINK_KEEPALIVE_CHANNEL;
			break;
		case LINK_KEEPALIVE_CHANNEL:
			if (!step_keepalive_channel(t))
				return;
			l->step = LINK_REMOTE_FORWARDS;
			break;
		case LINK_REMOTE_FORWARDS:
			if (!step_remote_forwards(t))
				return;
			l->step = LINK_READY;
			tunnel_link_ready(t);
			return;
		}
	}
}
