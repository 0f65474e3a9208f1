#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "link.h"
#include "liveness.h"
#include "log.h"
#include "net.h"

/*
 * A link's life: resolving and connecting, the connecting steps (link_auth.c), pumping
 * input up once ready, keepalives and liveness, and closing without waiting on the network.
 */

static void link_became_ready(struct link *l);

/*
 * A channel type no SSH server implements. A keepalive opens a channel of it: the server
 * refuses with SSH_MSG_CHANNEL_OPEN_FAILURE (OpenSSH answers "connect failed" and logs it
 * at DEBUG1 only; Dropbear "unknown channel type"), which ends libssh2's open call: one
 * round trip, nothing opened, nothing kept, whatever the server's MaxSessions. (Global
 * keepalive requests are answered too, but libssh2 1.10 never consumes their replies: they
 * pile up in its packet list and their round trip cannot be timed.)
 */
#define KEEPALIVE_TYPE "keepalive@moletun"
/* A libssh2 keepalive interval that makes every libssh2_keepalive_send() send (see its use) */
#define KEEPALIVE_ALWAYS 0x80000000u
/* libssh2 1.10's LIBSSH2_READ_TIMEOUT: how long it waits for an answer, on the wall clock */
#define LIBSSH2_ANSWER_WAIT 60.0

static void liveness_tick(struct link *l);

/* Runs the liveness tick from the loop once the pump under way is over, so that opens the
 * layer above has waiting start before the next keepalive. */
static void liveness_soon(struct link *l)
{
	ev_timer_stop(l->loop, &l->liveness);
	ev_timer_set(&l->liveness, 0., 0.);
	ev_timer_start(l->loop, &l->liveness);
}

/* Closes the keepalive channel a server accepted. 0 or a fatal libssh2 code. */
static int keepalive_free_stray(struct link *l)
{
	int rc;

	if (!l->keepalive_stray)
		return 0;
	rc = libssh2_channel_free(l->keepalive_stray);
	if (rc == LIBSSH2_ERROR_EAGAIN)
		return 0;
	l->keepalive_stray = NULL;
	return rc < 0 && ssh_error_fatal(rc) ? rc : 0;
}

/* Starts or continues our keepalive open (the session's open state is ours: nothing else
 * is in flight). 0, or a fatal libssh2 code. */
static int keepalive_open(struct link *l)
{
	LIBSSH2_CHANNEL *ch;
	double now;
	int rc;

	if (!l->keepalive_pending) {
		l->keepalive_sent = clock_now();
		l->keepalive_wanted = false;
	}
	ch = libssh2_channel_open_ex(l->session, KEEPALIVE_TYPE, sizeof(KEEPALIVE_TYPE) - 1, 0,
				     LIBSSH2_CHANNEL_PACKET_DEFAULT, NULL, 0);
	rc = ch ? 0 : libssh2_session_last_errno(l->session);
	l->keepalive_pending = rc == LIBSSH2_ERROR_EAGAIN;
	if (l->keepalive_pending)
		return 0;
	now = clock_now();
	if (ch || rc == LIBSSH2_ERROR_CHANNEL_FAILURE) {
		/* the answer (libssh2 freed what it had taken for the refused open) */
		if (!l->keepalive_warm) {
			/*
			 * The session's first answer is not timed: it meets sshd still setting
			 * the session up after authentication (measured: 8 ms on loopback where
			 * the next one took 0.2 ms). The next keepalive goes at once.
			 */
			l->keepalive_warm = true;
			l->keepalive_sent = 0;
		} else if (l->ops.on_rtt) {
			l->ops.on_rtt(l->ops.userdata, now - l->keepalive_sent);
		}
		/* ops may close the link; a server accepting a made-up type is no use to us */
		if (ch && l->active && !l->failed) {
			log_notice("%s: server accepted a channel of type %s; keepalives use "
				   "global requests, whose round trip is not measured",
				   l->p.name, KEEPALIVE_TYPE);
			l->keepalive_global = true;
			l->keepalive_stray = ch;
			return keepalive_free_stray(l);
		}
		return 0;
	}
	if (rc == LIBSSH2_ERROR_TIMEOUT && now - l->keepalive_sent < LIBSSH2_ANSWER_WAIT) {
		/* libssh2 gave up early: the wall clock stepped forward while it waited. Not an
		 * answer, not a dead server: the liveness timer judges by the bytes. */
		log_debug("%s: keepalive wait cut short by a wall-clock step", l->p.name);
		return 0;
	}
	return ssh_error_fatal(rc) ? rc : 0;
}

bool link_global_request_begin(struct link *l)
{
	if (l->global_sent != 0 || l->global_busy)
		return false;
	l->global_busy = true;
	return true;
}

void link_global_request_end(struct link *l)
{
	l->global_busy = false;
}

/* An unanswered keepalive: a global request, whose reply only counts as bytes received.
 * None while the layer above awaits the reply to its own (link_global_request_begin). */
static void keepalive_send_global(struct link *l)
{
	int next;

	if (l->global_busy)
		return;

	/*
	 * libssh2 1.10 sends only when keepalive_last_sent + interval <= time(NULL), the wall
	 * clock: after a step back it would stay silent for as long as the step, and the peer
	 * would look dead. liveness.c already decides when to send, on the monotonic clock, so
	 * the interval is one no step can defeat: libssh2 keeps it in an int, and this value
	 * reads there as INT_MIN (1 would become 2 and skip every other keepalive, too).
	 */
	libssh2_keepalive_config(l->session, 1, KEEPALIVE_ALWAYS);
	libssh2_keepalive_send(l->session, &next);
	l->global_sent = clock_now();
}

/* An answered keepalive now, or as soon as the open in flight ends. */
static void keepalive_send(struct link *l)
{
	int rc;

	if (l->open_busy) {
		l->keepalive_wanted = true;
		return;
	}
	rc = keepalive_open(l);
	if (rc) {
		link_fail(l, false, "sending keepalive: %s", link_last_error(l));
		return;
	}
	/* its answer must be read even when nothing else reads the socket now */
	if (l->keepalive_pending && !l->below)
		ev_io_start(l->loop, &l->rio);
}

/* Continues a keepalive in flight and the close of a stray one. 0, or a fatal code. */
static int keepalive_poll(struct link *l)
{
	int rc = keepalive_free_stray(l);

	if (rc || !l->keepalive_pending)
		return rc;
	rc = keepalive_open(l);
	if (rc || !l->active || l->failed || l->keepalive_pending)
		return rc;
	/* answered: the liveness timer was set for the answer's deadline */
	liveness_soon(l);
	return 0;
}

int link_channel_open(struct link *l, LIBSSH2_CHANNEL **ret, const char *type, unsigned type_len,
		      unsigned window, unsigned packet, const char *msg, unsigned msg_len)
{
	return link_channel_open_as(l, NULL, ret, type, type_len, window, packet, msg, msg_len);
}

int link_channel_open_as(struct link *l, const void *owner, LIBSSH2_CHANNEL **ret, const char *type,
			 unsigned type_len, unsigned window, unsigned packet, const char *msg,
			 unsigned msg_len)
{
	int rc;

	*ret = NULL;
	if (l->open_busy && l->open_owner != owner)
		return LIBSSH2_ERROR_EAGAIN; /* the owner's end of it pumps us again */
	if (!l->open_busy) {
		/* between two opens: a keepalive due meanwhile goes first */
		if (l->keepalive_wanted) {
			rc = keepalive_open(l);
			if (rc || !l->active || l->failed)
				return rc ? rc : LIBSSH2_ERROR_EAGAIN;
		}
		if (l->keepalive_pending)
			return LIBSSH2_ERROR_EAGAIN; /* its answer pumps the link */
	}
	*ret = libssh2_channel_open_ex(l->session, type, type_len, window, packet, msg, msg_len);
	rc = *ret ? 0 : libssh2_session_last_errno(l->session);
	l->open_owner = owner;
	l->open_busy = rc == LIBSSH2_ERROR_EAGAIN;
	/* the layer above's own opens may wait for this one to end (it pumps before us) */
	if (!l->open_busy && owner)
		link_want_pump(l);
	/* The keepalive held back by this open goes from the loop (not here: the caller may
	 * still read this open's error from the session) or before the next open. */
	if (!l->open_busy && l->keepalive_wanted)
		liveness_soon(l);
	return rc;
}

int link_direct_tcpip(struct link *l, LIBSSH2_CHANNEL **ret, const char *host, unsigned port,
		      const char *shost, unsigned sport, unsigned window)
{
	unsigned char msg[2 * (4 + 255) + 8], *p = msg;
	size_t host_len = strlen(host), shost_len = strlen(shost);
	const struct {
		const char *s;
		size_t len;
		unsigned port;
	} parts[] = {{host, host_len, port}, {shost, shost_len, sport}};

	*ret = NULL;
	if (host_len > 255 || shost_len > 255)
		return LIBSSH2_ERROR_INVAL;
	for (size_t i = 0; i < 2; i++) {
		uint32_t n = htonl((uint32_t)parts[i].len), pn = htonl(parts[i].port);

		memcpy(p, &n, 4);
		memcpy(p + 4, parts[i].s, parts[i].len);
		memcpy(p + 4 + parts[i].len, &pn, 4);
		p += 8 + parts[i].len;
	}
	return link_channel_open(l, ret, "direct-tcpip", sizeof("direct-tcpip") - 1, window,
				 LIBSSH2_CHANNEL_PACKET_DEFAULT, (const char *)msg,
				 (unsigned)(p - msg));
}

static void liveness_tick(struct link *l)
{
	double now = clock_now();
	struct liveness_input in = {
	    .now = now,
	    .last_tx = l->last_tx,
	    .keepalive_sent = l->keepalive_sent,
	    .pending = l->keepalive_pending,
	    .answers = !l->keepalive_global,
	    .blocked = l->keepalive_wanted && l->open_busy,
	    .global_sent = l->global_sent,
	    .out_len = buffer_len(&l->out),
	    .interval = (double)l->p.keepalive_interval_ms / 1000.0,
	    .count_max = l->p.keepalive_count_max,
	};
	enum liveness_verdict v;

	if (!l->below && !ev_is_active(&l->rio)) {
		/* Nothing reads the socket now (no channel, no open in flight): count bytes
		 * waiting in the kernel as signs of life. */
		int avail = 0;

		if (ioctl(l->fd, FIONREAD, &avail) == 0 && avail > l->unread_seen)
			l->last_rx = now;
		l->unread_seen = avail;
	}
	in.last_rx = l->last_rx;
	v = liveness_check(&in);
	switch (v) {
	case LIVENESS_DEAD_SILENT:
		link_fail(l, false, "no answer from server for %.1fs (keepalive timeout)",
			  now - l->last_rx);
		return;
	case LIVENESS_DEAD_UNANSWERED:
		link_fail(l, false,
			  "server stopped reading: keepalive unanswered for %.1fs while it kept "
			  "sending",
			  now - l->keepalive_sent);
		return;
	case LIVENESS_DEAD_NOT_TAKEN:
		link_fail(l, false,
			  "server stopped reading: %zu bytes waiting, none taken for %.1fs",
			  buffer_len(&l->out), now - l->last_tx);
		return;
	case LIVENESS_SEND:
		keepalive_send(l);
		if (!l->active || l->failed)
			return;
		in.keepalive_sent = l->keepalive_sent;
		in.pending = l->keepalive_pending;
		in.blocked = l->keepalive_wanted && l->open_busy;
		/* held back by an open in flight: a global request may be due in its place */
		if (!in.blocked || liveness_check(&in) != LIVENESS_SEND_GLOBAL)
			break;
		/* fall through */
	case LIVENESS_SEND_GLOBAL:
		keepalive_send_global(l);
		in.global_sent = l->global_sent;
		break;
	case LIVENESS_OK:
		break;
	}
	ev_timer_stop(l->loop, &l->liveness);
	ev_timer_set(&l->liveness, liveness_next_check(&in) - now, 0.);
	ev_timer_start(l->loop, &l->liveness);
}

static void liveness_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	liveness_tick(w->data);
}

/*
 * Reads pending input: a keepalive in flight does when the link pumps (the socket stays
 * watched for it), otherwise the upper layer's channels. With neither, a keepalive goes
 * early: libssh2 reads everything that came before its answer (a server's own keepalive
 * requests, its host keys after authentication, or a flood that must meet
 * session_memory_max), and there is no other way to make libssh2 1.10 read without a
 * channel. False when nothing reads: the liveness tick watches the kernel's count.
 */
static bool link_drain(struct link *l)
{
	int avail = 0;

	if (l->keepalive_pending || l->keepalive_stray)
		return true;
	if (l->ops.drain && l->ops.drain(l->ops.userdata))
		return true;
	if (l->keepalive_global || l->open_busy)
		return false;
	/* libssh2 stops reading at the packet it waited for: only bytes really waiting in the
	 * kernel call for a keepalive, or every answer would send the next one */
	if (ioctl(l->fd, FIONREAD, &avail) == 0 && avail == 0)
		return true;
	if (keepalive_open(l)) {
		link_fail(l, false, "sending keepalive: %s", link_last_error(l));
		return false;
	}
	return l->keepalive_pending;
}

/* Advances connecting, or lets the upper layer read its channels. */
static void link_pump(struct link *l)
{
	l->pump_wanted = false;
	for (int pass = 0; pass < 4 && l->active && !l->failed; pass++) {
		l->rx_progress = false;
		if (l->step < LINK_READY) {
			if (link_step(l) == LINK_DONE)
				link_became_ready(l);
		} else {
			int rc = keepalive_poll(l);

			if (!l->active || l->failed)
				return;
			if (rc == 0)
				rc = l->ops.on_input(l->ops.userdata);
			if (!l->active || l->failed)
				return;
			if (l->io_error || l->session_error || (rc < 0 && ssh_error_fatal(rc))) {
				link_fail(l, false, "%s", link_last_error(l));
				return;
			}
		}
		if (!l->active || l->failed)
			return;
		if (sessmem_over_cap(&l->mem)) {
			link_fail(l, false, "session memory over session_memory_max");
			return;
		}
		if (!l->rx_progress)
			break;
	}
	if (!l->active || l->failed)
		return;
	if (l->io_error) {
		link_fail(l, false, "%s", link_last_error(l));
		return;
	}
	/* Unread bytes keep the socket readable: link_drain has them read. When nothing can
	 * (global keepalives only, no channel), the socket is left alone until a channel opens;
	 * the liveness tick watches the kernel's byte count meanwhile. */
	if (l->step == LINK_READY && !l->below) {
		if (!l->rx_drained && !link_drain(l)) {
			if (!l->active || l->failed)
				return;
			ev_io_stop(l->loop, &l->rio);
		} else {
			ev_io_start(l->loop, &l->rio);
		}
	}
}

/*
 * Runs once per loop iteration before the loop blocks: pumps if libssh2 buffered input
 * outside a pump, then sends everything libssh2 queued in one go. A pump asked for during
 * this one (libssh2 moved bytes from the socket into a channel's queue after the layer
 * above had read that channel: the socket no longer says so) runs in the next iteration,
 * and the loop does not block before it.
 */
static void flush_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
	struct link *l = w->data;

	if (l->pump_wanted && l->active && !l->failed)
		link_pump(l);
	if (!l->active || l->failed)
		return;
	if (link_flush(l) < 0) {
		link_fail(l, false, "send to server: %s", strerror(l->io_error));
		return;
	}
	if (l->pump_wanted) {
		ev_idle_start(loop, &l->again);
		return;
	}
	ev_prepare_stop(loop, w);
}

/* Only keeps the loop from blocking while a pump is wanted (flush_cb runs it). */
static void again_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
	ev_idle_stop(loop, w);
}

static void link_readable(struct ev_loop *loop, ev_io *w, int revents)
{
	struct link *l = w->data;

	l->rx_drained = false;
	link_pump(l);
}

static void link_start_session(struct link *l);

/* A refused connect is retried on the quick pace (the tunnel's backoff decides). */
static void link_fail_connect(struct link *l, int err)
{
	link_fail_as(l, net_connect_refused(err) ? LINK_FAILURE_REFUSED : LINK_FAILURE_NETWORK,
		     "connect to %s:%u: %s", l->p.host, l->p.port, strerror(-err));
}

static void link_connected(void *userdata, int fd, int err)
{
	struct link *l = userdata;

	if (err < 0) {
		link_fail_connect(l, err);
		return;
	}
	if (l->dial.won_by > 1)
		log_debug("%s: TCP connect to %s:%u: attempt %u of %u answered after %.0f ms",
			  l->p.name, l->p.host, l->p.port, l->dial.won_by, l->dial.attempts,
			  l->dial.won_after * 1000);
	l->fd = fd;
	ev_io_set(&l->rio, l->fd, EV_READ);
	ev_io_set(&l->wio, l->fd, EV_WRITE);
	link_start_session(l);
}

static void link_writable(struct ev_loop *loop, ev_io *w, int revents)
{
	struct link *l = w->data;

	if (link_flush(l) < 0)
		link_fail(l, false, "send to server: %s", strerror(l->io_error));
}

static void link_resolved(struct link *l, int gai_rc, struct addrinfo *res)
{
	double stagger =
	    (double)(l->p.connect_stagger_ms ? l->p.connect_stagger_ms : LINK_CONNECT_STAGGER_MS) /
	    1000.0;
	int r;

	if (gai_rc != 0) {
		link_fail(l, false, "resolve %s: %s", l->p.host, gai_strerror(gai_rc));
		return;
	}
	l->addrs = res;
	l->step = LINK_TCP_CONNECT;
	r = dialer_start(&l->dial, l->loop, res, stagger, link_connected, l);
	if (r < 0)
		link_fail_connect(l, r);
}

static void link_resolve_poll(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct link *l = w->data;
	int r = gai_error(l->gai);
	struct addrinfo *res;

	if (r == EAI_INPROGRESS)
		return;
	ev_timer_stop(loop, w);
	res = l->gai->ar_result;
	free((char *)l->gai->ar_name);
	free((char *)l->gai->ar_service);
	free((void *)l->gai->ar_request);
	free(l->gai);
	l->gai = NULL;
	link_resolved(l, r, res);
}

static void link_init(struct link *l, struct ev_loop *loop, const struct link_params *p,
		      const struct link_ops *ops)
{
	memset(l, 0, sizeof(*l));
	l->loop = loop;
	l->p = *p;
	l->ops = *ops;
	l->active = true;
	l->fd = -1;
	l->step = LINK_RESOLVING;
	buffer_init(&l->out);
	buffer_init(&l->stream_in);
	ev_io_init(&l->rio, link_readable, -1, EV_READ);
	ev_io_init(&l->wio, link_writable, -1, EV_WRITE);
	ev_timer_init(&l->resolve_poll, link_resolve_poll, 0.005, 0.01);
	ev_timer_init(&l->liveness, liveness_cb, 1., 0.);
	ev_prepare_init(&l->flush, flush_cb);
	ev_idle_init(&l->again, again_cb);
	l->rio.data = l->wio.data = l->resolve_poll.data = l->liveness.data = l->flush.data = l;
}

/* Names are resolved with getaddrinfo_a so DNS never blocks the loop; numeric addresses
 * resolve at once. */
void link_open(struct link *l, struct ev_loop *loop, const struct link_params *p,
	       const struct link_ops *ops)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
	struct addrinfo numeric = hints, *res = NULL;
	char service[8];

	link_init(l, loop, p, ops);
	snprintf(service, sizeof(service), "%u", p->port);
	numeric.ai_flags |= AI_NUMERICHOST;
	if (getaddrinfo(p->host, service, &numeric, &res) == 0) {
		link_resolved(l, 0, res);
		return;
	}
	l->gai = calloc(1, sizeof(*l->gai));
	if (l->gai) {
		struct addrinfo *req = malloc(sizeof(*req));

		l->gai->ar_name = strdup(p->host);
		l->gai->ar_service = strdup(service);
		if (req)
			*req = hints;
		l->gai->ar_request = req;
	}
	if (!l->gai || !l->gai->ar_name || !l->gai->ar_service || !l->gai->ar_request ||
	    getaddrinfo_a(GAI_NOWAIT, &l->gai, 1, NULL) != 0) {
		link_fail(l, false, "resolve %s: out of resources", p->host);
		return;
	}
	ev_timer_start(loop, &l->resolve_poll);
}

static void link_start_session(struct link *l);

void link_open_stream(struct link *l, struct ev_loop *loop, const struct link_params *p,
		      const struct link_ops *ops, struct link *below, LIBSSH2_CHANNEL *channel)
{
	link_init(l, loop, p, ops);
	l->below = below;
	l->stream = channel;
	/* libssh2 wants a descriptor it can fcntl(); the bytes never touch it */
	l->fd = open("/dev/null", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (l->fd < 0) {
		link_fail(l, false, "cannot open /dev/null: %s", strerror(errno));
		return;
	}
	link_start_session(l);
}

int link_stream_pump(struct link *l)
{
	static char chunk[64 * 1024];
	bool fed = false;

	if (!l->active || l->failed)
		return 0;
	while (buffer_len(&l->stream_in) < LINK_STREAM_IN_MAX && !l->stream_eof) {
		ssize_t n = libssh2_channel_read(l->stream, chunk, sizeof(chunk));

		if (n == LIBSSH2_ERROR_EAGAIN)
			break;
		if (n < 0 && ssh_error_fatal((int)n))
			return (int)n;
		if (n <= 0) {
			l->stream_eof = true; /* closed by the hop, or refused midway */
			fed = true;
			break;
		}
		if (buffer_append(&l->stream_in, chunk, (size_t)n) < 0)
			return LIBSSH2_ERROR_ALLOC;
		l->stream_read += (uint64_t)n;
		fed = true;
	}
	if (fed) {
		l->rx_drained = false;
		link_pump(l);
		if (!l->active || l->failed)
			return 0;
	}
	if (buffer_len(&l->out) > 0 && link_flush(l) < 0)
		link_fail(l, false, "send through the hop below: %s", link_last_error(l));
	return 0;
}

static void link_start_session(struct link *l)
{
	unsigned interval_s = (unsigned)((l->p.keepalive_interval_ms + 999) / 1000);
	uint64_t dead_ms = l->p.keepalive_interval_ms * l->p.keepalive_count_max;

	if (!l->below) {
		net_set_nodelay(l->fd);
		net_set_liveness(l->fd, interval_s, l->p.keepalive_count_max,
				 dead_ms > 0xffffffffu ? 0xffffffffu : (unsigned)dead_ms);
	}
	if (link_session_new(l) < 0) {
		link_fail(l, false, "cannot create SSH session: out of memory");
		return;
	}
	link_setup_session(l);
	l->last_rx = clock_now();
	l->step = LINK_HANDSHAKE;
	if (!l->below)
		ev_io_start(l->loop, &l->rio);
	link_pump(l);
}

/* Authenticated: ready for channels; the first keepalive goes once the opens on_ready
 * asked for have started. */
static void link_became_ready(struct link *l)
{
	l->step = LINK_READY;
	l->ops.on_ready(l->ops.userdata);
	if (!l->active || l->failed)
		return;
	liveness_soon(l);
}

void link_close(struct link *l, bool goodbye)
{
	if (!l->active)
		return;
	ev_io_stop(l->loop, &l->rio);
	ev_io_stop(l->loop, &l->wio);
	ev_timer_stop(l->loop, &l->resolve_poll);
	ev_timer_stop(l->loop, &l->liveness);
	dialer_stop(&l->dial);
	if (l->gai) {
		/* A lookup still running cannot be freed; glibc owns it until it ends. */
		if (gai_cancel(l->gai) != EAI_NOTCANCELED) {
			free((char *)l->gai->ar_name);
			free((char *)l->gai->ar_service);
			free((void *)l->gai->ar_request);
			freeaddrinfo(l->gai->ar_result);
			free(l->gai);
		}
		l->gai = NULL;
	}
	if (l->agent) {
		libssh2_agent_disconnect(l->agent);
		libssh2_agent_free(l->agent);
	}
	if (l->session) {
		if (goodbye && !l->dead && !l->io_error && !l->failed && l->step >= LINK_AUTH_KEY) {
			libssh2_session_disconnect(l->session, "moletun shutting down");
			if (l->below)
				link_flush(l); /* into the channel while the hop below lives */
			else
				buffer_write_fd(&l->out, l->fd);
		}
		l->dead = true;
		log_debug("%s: session memory: %zu bytes at close, peak %zu", l->p.name,
			  l->mem.used, l->mem.peak);
		libssh2_session_free(l->session);
		/* what libssh2 did not free with the session (a key exchange cut short) */
		if (l->mem.blocks) {
			size_t bytes = l->mem.used, n = sessmem_release_all(&l->mem);

			log_debug("%s: %zu blocks (%zu bytes) left by libssh2 freed", l->p.name, n,
				  bytes);
		}
	}
	if (l->fd >= 0)
		close(l->fd);
	if (l->addrs)
		freeaddrinfo(l->addrs);
	buffer_finish(&l->out);
	buffer_finish(&l->stream_in);
	/* last: the goodbye above went through link_send, which asks for a flush */
	ev_prepare_stop(l->loop, &l->flush);
	ev_idle_stop(l->loop, &l->again);
	memset(l, 0, sizeof(*l));
	l->fd = -1;
}
