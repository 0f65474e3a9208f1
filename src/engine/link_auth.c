#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fd.h"
#include "hostkey.h"
#include "link.h"
#include "log.h"

/* The connecting steps after TCP: handshake, host key, authentication. Each step resumes
 * after EAGAIN; the layer above bounds them all (connect_timeout). */

void link_setup_session(struct link *l)
{
	char methods[256];

	/* libssh2 offers ecdsa first; ask for what known_hosts can actually verify. */
	hostkey_known_methods(l->session, l->p.known_hosts_file, l->p.host, l->p.port, methods,
			      sizeof(methods));
	if (methods[0])
		libssh2_session_method_pref(l->session, LIBSSH2_METHOD_HOSTKEY, methods);
}

static bool step_hostkey(struct link *l)
{
	char err[512], desc[160];
	enum hostkey_verdict v;

	hostkey_describe(l->session, desc, sizeof(desc));
	if (l->p.host_key_policy == HOST_KEY_NO) {
		log_warn("%s: host key NOT VERIFIED (strict_host_key_checking = no): %s", l->p.name,
			 desc);
		return true;
	}
	v = hostkey_check(l->session, l->p.known_hosts_file,
			  l->p.host_key_policy == HOST_KEY_ACCEPT_NEW, l->p.host, l->p.port, err,
			  sizeof(err));
	switch (v) {
	case HOSTKEY_MATCH:
		log_debug("%s: host key verified: %s", l->p.name, desc);
		return true;
	case HOSTKEY_MISMATCH:
		log_err("%s: HOST KEY CHANGED for %s:%u: the server offered %s, which "
			"differs from %s; someone may be intercepting the connection, or the "
			"server was re-keyed. Not authenticating.",
			l->p.name, l->p.host, l->p.port, desc, l->p.known_hosts_file);
		link_fail(l, true, "HOST KEY CHANGED (%s)", desc);
		return false;
	case HOSTKEY_NOT_FOUND:
		if (l->p.host_key_policy == HOST_KEY_ACCEPT_NEW) {
			int r = hostkey_append(l->session, l->p.known_hosts_file, l->p.host,
					       l->p.port, err, sizeof(err));
			if (r < 0) {
				link_fail(l, true, "cannot add host key to %s: %s",
					  l->p.known_hosts_file, err);
				return false;
			}
			log_notice("%s: added host key %s for %s:%u to %s", l->p.name, desc,
				   l->p.host, l->p.port, l->p.known_hosts_file);
			return true;
		}
		link_fail(l, true, "host key %s for %s:%u not found in %s", desc, l->p.host,
			  l->p.port, l->p.known_hosts_file);
		return false;
	case HOSTKEY_ERROR:
	default:
		link_fail(l, true, "%s", err);
		return false;
	}
}

static void fail_auth(struct link *l, const char *how)
{
	const char *rsa_hint = "";

	if (l->p.identity && strcmp(l->p.identity->key_type, "ssh-rsa") == 0)
		rsa_hint = " (libssh2 1.10 signs RSA keys only with SHA-1 ssh-rsa, which "
			   "OpenSSH >= 8.8 refuses: use an ed25519 or ECDSA key)";
	link_fail(l, true, "authentication failed for %s@%s:%u (%s)%s", l->p.user, l->p.host,
		  l->p.port, how, rsa_hint);
}

/* Returns 1 when done, 2 to try the agent, 0 to wait, -1 when the link failed. */
static int step_auth_key(struct link *l)
{
	const struct identity *id = l->p.identity;
	int rc;

	rc = libssh2_userauth_publickey_frommemory(
	    l->session, l->p.user, strlen(l->p.user), id->public_key,
	    id->public_key ? id->public_len : 0, id->private_key, id->private_len, id->passphrase);
	if (rc == LIBSSH2_ERROR_EAGAIN)
		return 0;
	if (rc == 0)
		return 1;
	if (l->io_error || rc == LIBSSH2_ERROR_SOCKET_SEND || rc == LIBSSH2_ERROR_SOCKET_RECV ||
	    rc == LIBSSH2_ERROR_SOCKET_DISCONNECT || rc == LIBSSH2_ERROR_TIMEOUT) {
		link_fail(l, false, "during authentication: %s", link_last_error(l));
		return -1;
	}
	if (l->p.use_agent) {
		log_info("%s: key %s not accepted (%s), trying ssh-agent", l->p.name,
			 l->p.identity_file, link_last_error(l));
		return 2;
	}
	{
		char how[300];

		snprintf(how, sizeof(how), "key %s: %s", l->p.identity_file, link_last_error(l));
		fail_auth(l, how);
	}
	return -1;
}

static int step_auth_agent(struct link *l)
{
	int rc;

	if (!l->agent) {
		const char *path = l->p.agent_socket;

		l->agent = libssh2_agent_init(l->session);
		if (!l->agent) {
			fail_auth(l, "ssh-agent: out of memory");
			return -1;
		}
		if (path)
			libssh2_agent_set_identity_path(l->agent, path);
		if (libssh2_agent_connect(l->agent) != 0) {
			fail_auth(l, "cannot connect to ssh-agent");
			return -1;
		}
		/* libssh2 1.10 opens the agent's socket without SOCK_CLOEXEC */
		fd_cloexec_from(3);
		if (libssh2_agent_list_identities(l->agent) != 0) {
			fail_auth(l, "cannot list ssh-agent identities");
			return -1;
		}
		if (libssh2_agent_get_identity(l->agent, &l->agent_identity, NULL) != 0) {
			fail_auth(l, "ssh-agent has no identities");
			return -1;
		}
	}
	for (;;) {
		rc = libssh2_agent_userauth(l->agent, l->p.user, l->agent_identity);
		if (rc == LIBSSH2_ERROR_EAGAIN)
			return 0;
		if (rc == 0)
			return 1;
		if (l->io_error) {
			link_fail(l, false, "during authentication: %s", link_last_error(l));
			return -1;
		}
		if (libssh2_agent_get_identity(l->agent, &l->agent_identity, l->agent_identity) !=
		    0) {
			fail_auth(l, "no ssh-agent identity accepted");
			return -1;
		}
	}
}

/*
 * A socket closed before the server's banner came is as cheap to retry as a refused
 * connect: a relay or proxy in front of a server that is not there (docker-proxy for a
 * container being replaced), or sshd dropping it past MaxStartups before forking. Not so
 * through a bastion, where each retry costs the bastion's handshake.
 */
static enum link_failure handshake_failure(const struct link *l)
{
	if (!l->below && l->io_error == ECONNRESET && !libssh2_session_banner_get(l->session))
		return LINK_FAILURE_REFUSED;
	return LINK_FAILURE_NETWORK;
}

enum link_progress link_step(struct link *l)
{
	int rc;

	for (;;) {
		switch (l->step) {
		case LINK_RESOLVING:
		case LINK_TCP_CONNECT:
			return LINK_WAITING;
		case LINK_READY:
			return LINK_DONE;
		case LINK_HANDSHAKE:
			rc = libssh2_session_handshake(l->session, l->fd);
			if (rc == LIBSSH2_ERROR_EAGAIN)
				return LINK_WAITING;
			if (rc) {
				link_fail_as(l, handshake_failure(l), "SSH handshake: %s",
					     link_last_error(l));
				return LINK_FAILED;
			}
			if (!step_hostkey(l))
				return LINK_FAILED;
			l->step = l->p.identity_file ? LINK_AUTH_KEY : LINK_AUTH_AGENT;
			break;
		case LINK_AUTH_KEY:
			rc = step_auth_key(l);
			if (rc <= 0)
				return rc < 0 ? LINK_FAILED : LINK_WAITING;
			if (rc == 2) {
				l->step = LINK_AUTH_AGENT;
				break;
			}
			return LINK_DONE;
		case LINK_AUTH_AGENT:
			rc = step_auth_agent(l);
			if (rc <= 0)
				return rc < 0 ? LINK_FAILED : LINK_WAITING;
			return LINK_DONE;
		}
	}
}
