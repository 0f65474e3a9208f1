#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "forward.h"
#include "forward_accept.h"
#include "forward_data.h"
#include "forward_remote.h"
#include "forward_window.h"
#include "log.h"
#include "net.h"
#include "probe.h"

/*
 * The forwarder's life with its tunnel: listeners bound at init and closed at finish, the
 * remote forwards requested with each session, held clients let in when it comes up and
 * channels dropped when it goes down, and the pump: queued channel opens, then every
 * conn's bytes. The top of the forward layer; below it, each calling only those after it:
 * forward_remote.c (remote forwards' channels), forward_accept.c (clients coming in),
 * forward_data.c (the data path) and forward_window.c (receive-window grants).
 */

void forward_up(struct forwarder *fw)
{
	struct list *pos, *tmp;

	fw->up = true;
	fw->starting = false;
	/* A new session: its targets are measured afresh. */
	for (size_t i = 0; i < fw->n_forwards; i++) {
		fw->stats[i].target_state = TARGET_UNKNOWN;
		fw->stats[i].target_error[0] = '\0';
	}
	list_for_each_safe(pos, tmp, &fw->conns)
	{
		struct conn *c = list_entry(pos, struct conn, link);

		if (c->state == CONN_HELD && !c->memory_wait && !conn_admit_open(c))
			conn_memory_wait(c);
	}
	if (!list_empty(&fw->open_queue))
		link_want_pump(fw->link);
	probe_start(fw);
}

void forward_attempt_failed(struct forwarder *fw)
{
	struct list *pos, *tmp;
	unsigned closed = 0;

	if (!fw->starting)
		return;
	fw->starting = false;
	if (fw->cfg->down_hold_ms > 0)
		return; /* they wait on, within the hold they were given */
	list_for_each_safe(pos, tmp, &fw->conns)
	{
		struct conn *c = list_entry(pos, struct conn, link);

		if (c->state != CONN_HELD || c->memory_wait)
			continue;
		forward_count_rejected(fw, c->forward, REJECT_DOWN);
		conn_destroy(c);
		closed++;
	}
	if (closed)
		log_info("tunnel %s: closing %u held client%s: the first connection attempt failed",
			 fw->cfg->name, closed, closed == 1 ? "" : "s");
}

void forward_down(struct forwarder *fw)
{
	struct list *pos, *tmp;

	if (!fw->stats)
		return; /* never initialized: a tunnel that failed to be made */
	fw->up = false;
	probe_stop(fw);
	list_for_each_safe(pos, tmp, &fw->conns)
	{
		struct conn *c = list_entry(pos, struct conn, link);

		if (c->state == CONN_HELD)
			continue;
		c->channel = NULL; /* freed with the session */
		conn_destroy(c);
	}
	free(fw->remotes);
	fw->remotes = NULL;
	fw->remote_next = 0;
}

void forward_resume_clients(struct forwarder *fw)
{
	struct list *pos, *tmp;

	list_for_each_safe(pos, tmp, &fw->conns)
	{
		struct conn *c = list_entry(pos, struct conn, link);

		if (c->hwm_blocked) {
			c->hwm_blocked = false;
			if (c->state == CONN_OPEN && !c->client_eof && buffer_len(&c->up) == 0)
				ev_io_start(fw->loop, &c->rio);
			conn_account(c);
		}
	}
	link_want_pump(fw->link); /* for conns whose pending bytes waited */
}

/*
 * Opens channels for queued clients, one at a time (libssh2 keeps open state per session;
 * the link's keepalives take turns with them). A client's channel opens with no receive
 * window: moletun grants it (conn.h). Returns 0 or a fatal rc.
 */
static int pump_opens(struct forwarder *fw)
{
	while (!list_empty(&fw->open_queue)) {
		struct conn *c = list_entry(fw->open_queue.next, struct conn, open_link);
		const struct forward_spec *f = &fw->cfg->forwards[c->forward];
		LIBSSH2_CHANNEL *ch;
		int rc;

		if (!conn_reserve_open(c))
			continue;
		rc = link_direct_tcpip(fw->link, &ch, f->target_host, f->target_port, c->peer_host,
				       c->peer_port, c->probe ? FORWARD_PROBE_WINDOW : 0);
		if (!ch) {
			char label[600];

			if (rc == LIBSSH2_ERROR_EAGAIN)
				return 0;
			if (fw->link->io_error || ssh_error_fatal(rc))
				return rc ? rc : LIBSSH2_ERROR_SOCKET_RECV;
			list_remove(&c->open_link);
			if (c->probe) {
				if (!c->probe_done) {
					c->probe_done = true;
					fw->stats[c->forward].probe_failures++;
					forward_target(fw, c->forward, false,
						       link_last_error(fw->link));
				}
				conn_destroy(c);
				continue;
			}
			fw->stats[c->forward].open_failures++;
			log_warn("tunnel %s: %s: channel open failed: %s", fw->cfg->name,
				 conn_label(c, label, sizeof(label)), link_last_error(fw->link));
			/* a client's open is evidence on the target too */
			forward_target(fw, c->forward, false, link_last_error(fw->link));
			conn_destroy(c);
			continue;
		}
		list_remove(&c->open_link);
		c->channel = ch;
		if (c->probe && !c->probe_done) {
			rc = probe_opened(c);
			if (rc < 0)
				return rc;
			continue;
		}
		if (c->fd < 0) {
			/* the client left while its open was in flight */
			c->state = CONN_CLOSING;
			if (libssh2_channel_free(ch) != LIBSSH2_ERROR_EAGAIN) {
				c->channel = NULL;
				conn_destroy(c);
			}
			continue;
		}
		c->state = CONN_OPEN;
		ev_io_start(fw->loop, &c->rio);
		forward_target(fw, c->forward, true, NULL);
		/* its first window, reserved when its open was sent */
		c->win.committed = 0;
		c->client_queued = 0;
		rc = conn_window_grant(c);
		conn_account(c);
		if (rc)
			return rc;
	}
	return 0;
}

/*
 * Reads whatever is waiting on the socket into libssh2 without taking any channel's data
 * (libssh2_poll spins the transport for a channel's session). Needed when no conn read
 * this pass, e.g. only a keepalive reply arrived. Returns false when there is no channel
 * or listener to do it through.
 */
bool forward_drain(struct forwarder *fw)
{
	LIBSSH2_POLLFD pfd = {.type = LIBSSH2_POLLFD_CHANNEL, .events = LIBSSH2_POLLFD_POLLIN};
	struct list *pos;

	if (!list_empty(&fw->open_queue))
		return true; /* the open in flight reads */
	pfd.fd.channel = NULL;
	for (pos = fw->conns.next; !pfd.fd.channel && pos != &fw->conns; pos = pos->next) {
		struct conn *c = list_entry(pos, struct conn, link);

		if (c->channel && c->state != CONN_CLOSING)
			pfd.fd.channel = c->channel;
	}
	for (size_t i = 0; !pfd.fd.channel && fw->remotes && i < fw->n_forwards; i++) {
		if (fw->remotes[i].listener) {
			pfd.type = LIBSSH2_POLLFD_LISTENER;
			pfd.fd.listener = fw->remotes[i].listener;
			break;
		}
	}
	if (!pfd.fd.channel && !pfd.fd.listener)
		return false;
	libssh2_poll(&pfd, 1, 0);
	return true;
}

int forward_pump(struct forwarder *fw)
{
	struct list *pos, *tmp;
	int rc;

	rc = pump_opens(fw);
	if (rc)
		return rc;
	rc = forward_accept_remotes(fw);
	if (rc)
		return rc;
	list_for_each_safe(pos, tmp, &fw->conns)
	{
		struct conn *c = list_entry(pos, struct conn, link);

		if (c->state == CONN_CLOSING) {
			if (libssh2_channel_free(c->channel) != LIBSSH2_ERROR_EAGAIN) {
				c->channel = NULL;
				conn_destroy(c);
			}
			continue;
		}
		if (c->state != CONN_OPEN)
			continue;
		if (c->probe) {
			rc = probe_pump(c);
			if (rc < 0)
				return rc;
			continue;
		}
		if (buffer_len(&c->up) > 0 && link_out_full(fw->link)) {
			c->hwm_blocked = true; /* forward_resume_clients pumps again */
		} else if (buffer_len(&c->up) > 0 || (c->client_eof && !c->eof_sent)) {
			rc = buffer_len(&c->up) > 0 ? conn_flush_up(c) : conn_forward_client_eof(c);
			if (rc < 0)
				return rc;
			if (rc == CONN_GONE)
				continue;
		}
		c->round_sent = 0;
		rc = conn_read_channel(c);
		if (rc < 0)
			return rc;
	}
	return 0;
}

int forward_request_remotes(struct forwarder *fw)
{
	LIBSSH2_SESSION *session = fw->link->session;

	if (!fw->remotes) {
		fw->remotes = calloc(fw->n_forwards ? fw->n_forwards : 1, sizeof(*fw->remotes));
		if (!fw->remotes)
			return LIBSSH2_ERROR_ALLOC;
		fw->remote_next = 0;
	}
	for (; fw->remote_next < fw->n_forwards; fw->remote_next++) {
		const struct forward_spec *f = &fw->cfg->forwards[fw->remote_next];
		struct remote_listener *r = &fw->remotes[fw->remote_next];
		int bound = 0, rc;

		r->forward = fw->remote_next;
		if (f->kind != FORWARD_REMOTE)
			continue;
		r->listener = libssh2_channel_forward_listen_ex(session, f->listen_host,
								f->listen_port, &bound, 16);
		if (r->listener)
			continue;
		rc = libssh2_session_last_errno(session);
		if (rc == LIBSSH2_ERROR_EAGAIN)
			return 0;
		if (fw->link->io_error ||
		    (ssh_error_fatal(rc) && rc != LIBSSH2_ERROR_REQUEST_DENIED))
			return rc ? rc : LIBSSH2_ERROR_SOCKET_RECV;
		r->failed = true;
		fw->stats[fw->remote_next].open_failures++;
		log_err("tunnel %s: server refused remote forward %s:%u -> %s:%u (%s)",
			fw->cfg->name, f->listen_host, f->listen_port, f->target_host,
			f->target_port, link_last_error(fw->link));
	}
	return 1;
}

size_t forward_allowance(const struct forwarder *fw)
{
	uint64_t owed = 0;

	/* twice what its conns hold: libssh2 keeps each packet whole, with its headers */
	for (size_t i = 0; i < fw->n_forwards; i++)
		owed += 2 * fw->stats[i].memory;
	return owed > SIZE_MAX ? SIZE_MAX : (size_t)owed;
}

void forward_windows(const struct forwarder *fw, size_t forward, uint64_t *ret_largest,
		     uint64_t *ret_total)
{
	const struct list *pos;
	uint64_t largest = 0, total = 0;

	for (pos = fw->conns.next; pos != &fw->conns; pos = pos->next) {
		const struct conn *c = list_entry(pos, struct conn, link);
		uint64_t w;

		if (c->forward != forward || c->probe || !c->channel || c->state == CONN_CLOSING)
			continue;
		w = c->win.window;
		total += w;
		if (w > largest)
			largest = w;
	}
	*ret_largest = largest;
	*ret_total = total;
}

static int listener_open(struct forwarder *fw, const struct forward_spec *f)
{
	if (fw->listen)
		return fw->listen->open(fw->listen->userdata, f->listen_host, f->listen_port);
	return net_listen(f->listen_host, f->listen_port);
}

static void listener_close(struct forwarder *fw, int fd)
{
	if (fw->listen)
		fw->listen->close(fw->listen->userdata, fd);
	else
		close(fd);
}

int forward_init(struct forwarder *fw, struct ev_loop *loop, const struct tunnel_config *cfg,
		 struct link *link, const struct listen_ops *listen, const struct forward_ops *ops,
		 char *err, size_t err_size)
{
	memset(fw, 0, sizeof(*fw));
	fw->loop = loop;
	fw->cfg = cfg;
	fw->link = link;
	fw->listen = listen;
	fw->ops = *ops;
	fw->starting = true;
	fw->n_forwards = cfg->n_forwards;
	list_init(&fw->conns);
	list_init(&fw->open_queue);
	ev_init(&fw->probe_timer, NULL);
	fw->stats = calloc(cfg->n_forwards ? cfg->n_forwards : 1, sizeof(*fw->stats));
	fw->listeners = calloc(cfg->n_forwards ? cfg->n_forwards : 1, sizeof(*fw->listeners));
	if (!fw->stats || !fw->listeners) {
		snprintf(err, err_size, "out of memory");
		return -ENOMEM;
	}
	for (size_t i = 0; i < cfg->n_forwards; i++)
		fw->listeners[i].fd = -1;
	for (size_t i = 0; i < cfg->n_forwards; i++) {
		const struct forward_spec *f = &cfg->forwards[i];
		struct listener *li = &fw->listeners[i];

		li->fw = fw;
		li->forward = i;
		if (f->kind != FORWARD_LOCAL)
			continue;
		li->fd = listener_open(fw, f);
		if (li->fd < 0) {
			int r = li->fd;

			snprintf(err, err_size, "cannot listen on %s:%u: %s", f->listen_host,
				 f->listen_port, strerror(-r));
			li->fd = -1;
			return r;
		}
		listener_watch(li);
	}
	return 0;
}

void forward_finish(struct forwarder *fw)
{
	struct list *pos, *tmp;

	if (!fw->stats)
		return;
	forward_down(fw);
	list_for_each_safe(pos, tmp, &fw->conns) conn_destroy(list_entry(pos, struct conn, link));
	for (size_t i = 0; fw->listeners && i < fw->n_forwards; i++) {
		struct listener *li = &fw->listeners[i];

		if (li->fd < 0)
			continue;
		ev_io_stop(fw->loop, &li->io);
		ev_timer_stop(fw->loop, &li->pause);
		listener_close(fw, li->fd);
	}
	free(fw->listeners);
	free(fw->stats);
	fw->listeners = NULL;
	fw->stats = NULL;
}

void forward_set_config(struct forwarder *fw, const struct tunnel_config *cfg)
{
	fw->cfg = cfg;
}

void forward_start(struct forwarder *fw)
{
	for (size_t i = 0; i < fw->n_forwards; i++)
		if (fw->listeners[i].fd >= 0)
			ev_io_start(fw->loop, &fw->listeners[i].io);
}