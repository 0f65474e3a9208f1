#include "forward_remote.h"

#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "forward_accept.h"
#include "forward_window.h"
#include "log.h"
#include "memacct.h"
#include "net.h"

/*
 * Remote forwards' channels: each channel the server opens on a remote forward's listener
 * is admitted under the same caps as a local client (max_connections, the memory account)
 * and connected to its local target; the connect completes on the data path
 * (conn_client_writable). Below the forwarder's lifecycle (forward.c), which requests the
 * remote forwards; above forward_accept.c and forward_window.c.
 */

/* A channel the server opened on forward `forward`: admitted, then connected to the local
 * target. */
static void remote_accept_one(struct forwarder *fw, size_t forward, LIBSSH2_CHANNEL *ch)
{
	const struct forward_spec *f = &fw->cfg->forwards[forward];
	struct sockaddr_storage ss;
	socklen_t len;
	struct conn *c;
	int fd = -1, rc;

	/* The server's listener is as open as ours: the same cap on what it can make us hold
	 * (a conn, a descriptor, buffers). */
	if (fw->stats[forward].active >= fw->cfg->max_connections) {
		forward_count_rejected(fw, forward, REJECT_MAX_CONNECTIONS);
		log_warn("tunnel %s: max_connections (%u) reached on remote %s:%u; closing new "
			 "channel",
			 fw->cfg->name, fw->cfg->max_connections, f->listen_host, f->listen_port);
		libssh2_channel_free(ch);
		return;
	}
	if (!forward_admit(fw, forward, LIBSSH2_CHANNEL_WINDOW_DEFAULT + CONN_SLACK)) {
		forward_count_rejected(fw, forward, REJECT_MEMORY);
		log_warn("tunnel %s: memory account at %.1f of %.1f MiB (%s): closing new channel "
			 "on remote %s:%u",
			 fw->cfg->name, (double)memacct_used() / (1 << 20),
			 (double)memacct_limit() / (1 << 20), memacct_stage_str(memacct_stage()),
			 f->listen_host, f->listen_port);
		libssh2_channel_free(ch);
		return;
	}
	rc = net_resolve_numeric(f->target_host, f->target_port, &ss, &len);
	if (rc == 0)
		rc = net_connect_start((struct sockaddr *)&ss, len, &fd);
	if (rc < 0) {
		fw->stats[forward].open_failures++;
		log_warn("tunnel %s: remote forward target %s:%u: %s", fw->cfg->name,
			 f->target_host, f->target_port, strerror(-rc));
		libssh2_channel_free(ch);
		return;
	}
	c = conn_new(fw, forward, fd, CONN_CONNECTING);
	if (!c) {
		close(fd);
		libssh2_channel_free(ch);
		return;
	}
	conn_watch(c);
	conn_set_sndbuf(c, CLIENT_SNDBUF);
	c->channel = ch;
	/* libssh2 opened it with its default window and keeps that open by itself: the rule
	 * grows it from there (forward_window.c) */
	chanwin_init(&c->win, LIBSSH2_CHANNEL_WINDOW_DEFAULT, LIBSSH2_CHANNEL_WINDOW_DEFAULT);
	chanwin_sync(ch, &c->win);
	ev_io_start(fw->loop, &c->wio);
	conn_account(c);
}

int forward_accept_remotes(struct forwarder *fw)
{
	if (!fw->remotes)
		return 0;
	for (size_t i = 0; i < fw->n_forwards; i++) {
		struct remote_listener *r = &fw->remotes[i];

		if (!r->listener)
			continue;
		for (;;) {
			LIBSSH2_CHANNEL *ch = libssh2_channel_forward_accept(r->listener);
			int rc;

			if (!ch) {
				rc = libssh2_session_last_errno(fw->link->session);
				if (rc == LIBSSH2_ERROR_EAGAIN || !ssh_error_fatal(rc))
					break;
				return rc;
			}
			remote_accept_one(fw, i, ch);
		}
	}
	return 0;
}
