#include "forward_data.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "forward_window.h"
#include "log.h"
#include "net.h"

/*
 * The data path: bytes between a client (or a remote forward's target) and its channel.
 * Bytes move through one shared scratch buffer; a conn holds memory only for bytes the
 * other side has not taken yet, so idle connections cost a struct, a libssh2 channel and
 * the window granted to it. Below the accept and remote files, above the window grants
 * (forward_window.c).
 */

#define IO_CHUNK FORWARD_READ_CHUNK

static char scratch[IO_CHUNK];

const char *conn_label(const struct conn *c, char *buf, size_t size)
{
	const struct forward_spec *f = &c->fw->cfg->forwards[c->forward];

	if (f->kind == FORWARD_LOCAL)
		snprintf(buf, size, "%s:%u -> %s:%u", f->listen_host, f->listen_port,
			 f->target_host, f->target_port);
	else
		snprintf(buf, size, "remote %s:%u -> %s:%u", f->listen_host, f->listen_port,
			 f->target_host, f->target_port);
	return buf;
}

/* Both directions finished: release the conn. */
static bool conn_finish_if_done(struct conn *c)
{
	if (c->client_eof && c->channel_eof && buffer_len(&c->down) == 0) {
		conn_close(c);
		return true;
	}
	return false;
}

/* Sends EOF to the channel once every client byte went through. 0 or a fatal rc. */
int conn_forward_client_eof(struct conn *c)
{
	int rc;

	if (!c->client_eof || buffer_len(&c->up) > 0 || c->eof_sent)
		return 0;
	rc = libssh2_channel_send_eof(c->channel);
	if (rc == LIBSSH2_ERROR_EAGAIN)
		return 0;
	c->eof_sent = true;
	if (rc < 0 && ssh_error_fatal(rc))
		return rc;
	return conn_finish_if_done(c) ? CONN_GONE : 0;
}

/* Writes `len` bytes to the channel; what the window does not take is kept in c->up and
 * the client is not read until it drains. Returns 0, or a fatal rc; CONN_GONE if the conn was closed. */
static int conn_write_channel(struct conn *c, const char *data, size_t len)
{
	struct forwarder *fw = c->fw;
	size_t off = 0;

	while (off < len) {
		ssize_t n = libssh2_channel_write(c->channel, data + off, len - off);

		if (n > 0) {
			off += (size_t)n;
			fw->stats[c->forward].bytes_out += (uint64_t)n;
			continue;
		}
		if (n == 0 || n == LIBSSH2_ERROR_EAGAIN)
			break;
		if (ssh_error_fatal((int)n))
			return (int)n;
		conn_close(c);
		return CONN_GONE;
	}
	if (off < len) {
		if (buffer_append(&c->up, data + off, len - off) < 0) {
			conn_close(c);
			return CONN_GONE;
		}
		ev_io_stop(fw->loop, &c->rio);
	}
	return 0;
}

/* Retries bytes the channel window refused earlier. */
int conn_flush_up(struct conn *c)
{
	struct forwarder *fw = c->fw;

	while (buffer_len(&c->up) > 0) {
		ssize_t n =
		    libssh2_channel_write(c->channel, c->up.data + c->up.start, buffer_len(&c->up));
		if (n > 0) {
			buffer_consume(&c->up, (size_t)n);
			fw->stats[c->forward].bytes_out += (uint64_t)n;
			continue;
		}
		if (n == 0 || n == LIBSSH2_ERROR_EAGAIN)
			return 0;
		if (ssh_error_fatal((int)n))
			return (int)n;
		conn_close(c);
		return CONN_GONE;
	}
	buffer_compact(&c->up);
	if (c->client_eof)
		return conn_forward_client_eof(c);
	if (!c->hwm_blocked)
		ev_io_start(fw->loop, &c->rio);
	return 0;
}

/* Reads the channel into the scratch buffer; on a channel whose window moletun grants,
 * counts what libssh2 granted for the read (chanwin.c). The read's result. */
static ssize_t conn_channel_read(struct conn *c, bool own)
{
	if (own)
		return chanwin_read(c->channel, &c->win, scratch, sizeof(scratch));
	return libssh2_channel_read(c->channel, scratch, sizeof(scratch));
}

/* Sends the `n` bytes read to the client; what its socket does not take waits in c->down
 * until it is writable. 0, or CONN_GONE if the conn was closed. */
static int conn_send_client(struct conn *c, ssize_t n)
{
	ssize_t w = send(c->fd, scratch, (size_t)n, MSG_NOSIGNAL);

	if (w < 0 && errno != EAGAIN && errno != EINTR) {
		conn_close(c);
		return CONN_GONE;
	}
	if (w < 0)
		w = 0;
	if (w < n) {
		if (buffer_append(&c->down, scratch + w, (size_t)(n - w)) < 0) {
			conn_close(c);
			return CONN_GONE;
		}
		ev_io_start(c->fw->loop, &c->wio);
	}
	c->client_queued = conn_client_queued(c->fd);
	c->round_sent += (uint64_t)w;
	return 0;
}

/*
 * Moves channel data to the client until the channel is empty or the client is full; the
 * channel then gets its window again (conn_window_update). Returns 0,
 * a fatal rc, or CONN_GONE if the conn was closed.
 */
int conn_read_channel(struct conn *c)
{
	struct forwarder *fw = c->fw;
	bool own = conn_window_own(c);
	int rc = 0;

	while (!c->channel_eof && buffer_len(&c->down) == 0) {
		ssize_t n;

		if (own && c->win.pending) {
			rc = chanwin_flush(c->channel, &c->win);
			if (rc == LIBSSH2_ERROR_EAGAIN) {
				rc = 0; /* the pump comes back when the session moves */
				break;
			}
			if (rc < 0 && ssh_error_fatal(rc))
				return rc;
			rc = 0;
			c->win.pending = 0;
		}
		n = conn_channel_read(c, own);
		if (n == LIBSSH2_ERROR_EAGAIN) {
			if (own)
				rc = conn_window_update(c);
			break;
		}
		if (n < 0) {
			if (ssh_error_fatal((int)n))
				return (int)n;
			conn_close(c);
			return CONN_GONE;
		}
		if (n == 0) {
			c->channel_eof = true;
			shutdown(c->fd, SHUT_WR);
			if (conn_finish_if_done(c))
				return CONN_GONE;
			break;
		}
		fw->stats[c->forward].bytes_in += (uint64_t)n;
		if (conn_send_client(c, n) == CONN_GONE)
			return CONN_GONE;
		if (own) {
			rc = conn_window_received(c, (uint64_t)n);
			if (rc)
				return rc;
		}
	}
	conn_account(c);
	return rc;
}

void conn_client_readable(struct ev_loop *loop, ev_io *w, int revents)
{
	struct conn *c = w->data;
	struct forwarder *fw = c->fw;
	ssize_t n;
	int rc = 0;

	if (link_out_full(fw->link)) {
		c->hwm_blocked = true;
		ev_io_stop(loop, &c->rio);
		conn_account(c);
		return;
	}
	n = recv(c->fd, scratch, sizeof(scratch), 0);
	if (n > 0) {
		rc = conn_write_channel(c, scratch, (size_t)n);
	} else if (n == 0) {
		c->client_eof = true;
		ev_io_stop(loop, &c->rio);
		rc = conn_forward_client_eof(c);
	} else if (errno != EAGAIN && errno != EINTR) {
		conn_close(c);
		return;
	}
	if (rc < 0)
		link_session_error(fw->link, rc);
	else if (rc == 0)
		conn_account(c);
}

void conn_client_writable(struct ev_loop *loop, ev_io *w, int revents)
{
	struct conn *c = w->data;
	struct forwarder *fw = c->fw;
	ssize_t n;
	int rc;

	if (c->state == CONN_CONNECTING) {
		ev_io_stop(loop, &c->wio);
		rc = net_connect_result(c->fd);
		if (rc < 0) {
			char label[600];

			fw->stats[c->forward].open_failures++;
			log_warn("tunnel %s: %s: connect to target: %s", fw->cfg->name,
				 conn_label(c, label, sizeof(label)), strerror(-rc));
			conn_close(c);
			return;
		}
		net_set_nodelay(c->fd);
		c->state = CONN_OPEN;
		ev_io_start(loop, &c->rio);
		conn_account(c);
		link_want_pump(fw->link);
		return;
	}
	n = buffer_write_fd(&c->down, c->fd);
	if (n < 0 && n != -EAGAIN) {
		conn_close(c);
		return;
	}
	if (buffer_len(&c->down) > 0)
		return;
	ev_io_stop(loop, &c->wio);
	buffer_compact(&c->down);
	c->round_sent = n > 0 ? (uint64_t)n : 0;
	rc = conn_read_channel(c);
	if (rc < 0)
		link_session_error(fw->link, rc);
}
