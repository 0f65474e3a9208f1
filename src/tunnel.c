#include "tunnel.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "duration.h"
#include "log.h"
#include "net.h"

/* Up this long before backoff starts over from backoff_initial. */
#define STABLE_AFTER 5.0
/* The SSH out-buffer size above which clients stop being read (backpressure). */
#define OUT_HIGH_WATER (1024 * 1024)

bool tunnel_out_full(const struct tunnel *t)
{
	return buffer_len(&t->link.out) >= OUT_HIGH_WATER;
}

static bool any_target_down(const struct tunnel *t)
{
	for (size_t i = 0; i < t->n_forwards; i++)
		if (t->stats[i].target_state == TARGET_UNREACHABLE)
			return true;
	return false;
}

static enum tunnel_health decide_health(const struct tunnel *t)
{
	return health_decide(t->health, t->state, &t->rtt, (double)t->cfg->degraded_rtt_ms / 1000.0,
			     any_target_down(t));
}

void tunnel_health_update(struct tunnel *t, bool targets_changed)
{
	enum tunnel_health h = decide_health(t);

	if (h != t->health) {
		log_msg(h == HEALTH_OK ? LOG_NOTICE : LOG_WARNING, "tunnel %s: health %s -> %s%s",
			t->cfg->name, tunnel_health_str(t->health), tunnel_health_str(h),
			h == HEALTH_DEGRADED ? " (round trip above degraded_rtt)" : "");
		t->health = h;
	} else if (!targets_changed) {
		return;
	}
	if (t->on_state)
		t->on_state(t, t->userdata);
}

void tunnel_target_result(struct tunnel *t, size_t forward, bool reachable, const char *why)
{
	struct forward_stats *st = &t->stats[forward];
	const struct forward_spec *f = &t->cfg->forwards[forward];
	enum target_state s = reachable ? TARGET_REACHABLE : TARGET_UNREACHABLE;
	bool changed = st->target_state != s;

	if (!reachable && strncmp(st->target_error, why, sizeof(st->target_error) - 1) != 0)
		changed = true;
	if (st->target_state != s)
		log_msg(reachable ? LOG_NOTICE : LOG_WARNING, "tunnel %s: target %s:%u %s%s%s%s",
			t->cfg->name, f->target_host, f->target_port,
			reachable ? "reachable" : "unreachable", reachable ? "" : " (",
			reachable ? "" : why, reachable ? "" : ")");
	st->target_state = s;
	snprintf(st->target_error, sizeof(st->target_error), "%s", reachable ? "" : why);
	tunnel_health_update(t, changed);
}

/* The one place state changes: records, logs once, and tells the daemon. */
static void set_state(struct tunnel *t, enum tunnel_state s, const char *reason, uint64_t retry_ms)
{
	enum tunnel_state old = t->state;
	char retry[64] = "";

	if (retry_ms != UINT64_MAX) {
		char d[32];

		duration_format(retry_ms, d, sizeof(d));
		snprintf(retry, sizeof(retry), "; retry in %s", d);
	}
	t->state = s;
	t->health = decide_health(t); /* the state line says it: no line of its own */
	clock_gettime(CLOCK_REALTIME, &t->since);
	t->since_mono = ev_now(t->loop);
	log_msg(s == TUNNEL_UP ? LOG_NOTICE : (old == TUNNEL_UP ? LOG_WARNING : LOG_INFO),
		"tunnel %s: state %s -> %s%s%s%s", t->cfg->name, tunnel_state_str(old),
		tunnel_state_str(s), reason ? ": " : "", reason ? reason : "", retry);
	if (t->on_state)
		t->on_state(t, t->userdata);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents);

static void arm_timer(struct tunnel *t, double seconds)
{
	ev_timer_stop(t->loop, &t->timer);
	ev_timer_set(&t->timer, seconds < 0.001 ? 0.001 : seconds, 0.0);
	ev_timer_start(t->loop, &t->timer);
}

static void connect_begin(struct tunnel *t, const char *reason)
{
	if (t->state != TUNNEL_CONNECTING)
		set_state(t, TUNNEL_CONNECTING, reason, UINT64_MAX);
	arm_timer(t, (double)t->cfg->connect_timeout_ms / 1000.0);
	link_open(t);
}

void tunnel_fail(struct tunnel *t, bool needs_human, const char *fmt, ...)
{
	char reason[256];
	uint64_t delay;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	if (t->link.active && sessmem_over_cap(&t->link.mem)) {
		/* whatever libssh2 call failed, the refused allocation is why */
		const struct sessmem *m = &t->link.mem;

		snprintf(reason, sizeof(reason),
			 "server sent too much unsolicited data: session memory over "
			 "session_memory_max (%.1f MiB in use, a request for %zu bytes refused)",
			 (double)m->used / (1 << 20), m->refused);
	}
	snprintf(t->last_error, sizeof(t->last_error), "%s", reason);
	if (t->state == TUNNEL_UP && ev_now(t->loop) - t->since_mono >= STABLE_AFTER)
		backoff_reset(&t->backoff);
	t->auth_failure = needs_human;
	probe_stop(t);
	forward_tunnel_down(t);
	link_close(t, false);
	if (needs_human)
		delay = backoff_pace(&t->backoff, t->cfg->auth_retry_interval_ms);
	else
		delay = backoff_next(&t->backoff);
	set_state(t, TUNNEL_BACKOFF, reason, delay);
	arm_timer(t, (double)delay / 1000.0);
}

static void send_keepalive(struct tunnel *t)
{
	struct link *l = &t->link;
	int rc, next;

	l->keepalive_sent = ev_now(t->loop);
	if (!l->keepalive_channel) {
		libssh2_keepalive_send(l->session, &next);
		return;
	}
	/*
	 * A channel request with want-reply on our own session channel: sshd answers it and
	 * libssh2 consumes the answer. (Global keepalive replies are never consumed by
	 * libssh2 1.10 and pile up in its packet list, slowing every channel read.)
	 */
	rc = libssh2_channel_setenv_ex(l->keepalive_channel, "MOLETUN_KEEPALIVE", 17, "1", 1);
	if (rc == LIBSSH2_ERROR_EAGAIN)
		l->keepalive_pending = true;
	else if (rc != 0 && rc != LIBSSH2_ERROR_CHANNEL_REQUEST_DENIED && ssh_error_fatal(rc))
		tunnel_fail(t, false, "sending keepalive: %s", ssh_last_error(t));
}

/*
 * Liveness: a probe goes out after `probe_after` of silence and again every `probe_after`
 * while the silence lasts (every `probe_after` regardless when the probes' answers can be
 * seen); the peer is dead after keepalive_interval * keepalive_count_max without a single
 * byte, or with a probe unanswered, or with bytes waiting that the socket does not take. probe_after is keepalive_interval, except that with a single
 * allowed interval (count_max 1) probes go out at half of it, so an answer can arrive
 * before the deadline.
 */
static void keepalive_tick(struct tunnel *t)
{
	struct link *l = &t->link;
	double now = ev_now(t->loop);
	double interval = (double)t->cfg->keepalive_interval_ms / 1000.0;
	double dead_after = interval * t->cfg->keepalive_count_max;
	double probe_after = dead_after - interval / 2 < interval ? interval / 2 : interval;
	/* replies to probes on our session channel are seen (global ones are not) */
	bool answers = l->keepalive_channel != NULL;
	double idle, due;

	if (!ev_is_active(&l->rio)) {
		/* No channel can drain the socket (the server refused a session channel):
		 * count bytes waiting in the kernel as signs of life. */
		int avail = 0;

		if (ioctl(l->fd, FIONREAD, &avail) == 0 && avail > l->unread_seen)
			l->last_rx = now;
		l->unread_seen = avail;
	}
	idle = now - l->last_rx;
	if (idle >= dead_after) {
		tunnel_fail(t, false, "no answer from server for %.1fs (keepalive timeout)", idle);
		return;
	}
	/* A server that keeps sending but stopped reading passes the test above; it does
	 * not answer probes, and what we send for it waits. */
	if (answers && l->keepalive_pending && now - l->keepalive_sent >= dead_after) {
		tunnel_fail(t, false,
			    "server stopped reading: keepalive unanswered for %.1fs while it "
			    "kept sending",
			    now - l->keepalive_sent);
		return;
	}
	if (buffer_len(&l->out) > 0 && now - l->last_tx >= dead_after) {
		tunnel_fail(t, false,
			    "server stopped reading: %zu bytes waiting, none taken for %.1fs",
			    buffer_len(&l->out), now - l->last_tx);
		return;
	}
	/* With answers to look at (which also time the round trip), a probe goes out every
	 * probe_after even while bytes arrive; otherwise only after probe_after of silence. */
	if ((idle >= probe_after || answers) && !l->keepalive_pending &&
	    now - l->keepalive_sent >= probe_after) {
		send_keepalive(t);
		if (t->state != TUNNEL_UP)
			return;
	}
	due = answers ? l->keepalive_sent + probe_after : l->last_rx + probe_after;
	if (due < l->keepalive_sent + probe_after)
		due = l->keepalive_sent + probe_after;
	if (due <= now) /* a probe is still unanswered: look again soon */
		due = now + probe_after / 2;
	if (due > l->last_rx + dead_after)
		due = l->last_rx + dead_after;
	if (answers && l->keepalive_pending && due > l->keepalive_sent + dead_after)
		due = l->keepalive_sent + dead_after;
	if (buffer_len(&l->out) > 0 && due > l->last_tx + dead_after)
		due = l->last_tx + dead_after;
	arm_timer(t, due - now);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct tunnel *t = w->data;
	char d[32];

	switch (t->state) {
	case TUNNEL_BACKOFF:
		connect_begin(t, NULL);
		break;
	case TUNNEL_CONNECTING:
		duration_format(t->cfg->connect_timeout_ms, d, sizeof(d));
		tunnel_fail(t, false, "connect timeout after %s (during %s)", d,
			    link_step_str(t->link.step));
		break;
	case TUNNEL_UP:
		keepalive_tick(t);
		break;
	}
}

void tunnel_link_ready(struct tunnel *t)
{
	if (t->ever_up)
		t->reconnects++;
	t->ever_up = true;
	t->last_error[0] = '\0';
	t->auth_failure = false;
	/* A new session: its round trips and its targets are measured afresh. */
	rtt_init(&t->rtt);
	for (size_t i = 0; i < t->n_forwards; i++) {
		t->stats[i].target_state = TARGET_UNKNOWN;
		t->stats[i].target_error[0] = '\0';
	}
	set_state(t, TUNNEL_UP, NULL, UINT64_MAX);
	forward_tunnel_up(t);
	probe_start(t);
	keepalive_tick(t);
}

void tunnel_pump(struct tunnel *t)
{
	struct link *l = &t->link;

	t->pump_wanted = false;
	for (int pass = 0; pass < 4 && l->active; pass++) {
		l->rx_progress = false;
		if (l->step < LINK_READY) {
			link_step(t);
		} else {
			int rc = 0;

			if (l->keepalive_pending) {
				rc = libssh2_channel_setenv_ex(l->keepalive_channel,
							       "MOLETUN_KEEPALIVE", 17, "1", 1);
				if (rc != LIBSSH2_ERROR_EAGAIN)
					l->keepalive_pending = false;
				if (rc == 0 || rc == LIBSSH2_ERROR_CHANNEL_REQUEST_DENIED) {
					/* the answer: one round trip through sshd */
					rtt_sample(&t->rtt, ev_now(t->loop) - l->keepalive_sent);
					tunnel_health_update(t, false);
				}
				if (rc == LIBSSH2_ERROR_CHANNEL_REQUEST_DENIED ||
				    rc == LIBSSH2_ERROR_EAGAIN)
					rc = 0;
			}
			if (rc == 0 || !ssh_error_fatal(rc))
				rc = forward_pump(t);
			if (l->io_error || (rc < 0 && ssh_error_fatal(rc))) {
				tunnel_fail(t, false, "%s", ssh_last_error(t));
				return;
			}
		}
		if (l->active && sessmem_over_cap(&l->mem)) {
			tunnel_fail(t, false, "session memory over session_memory_max");
			return;
		}
		if (!l->active || !l->rx_progress)
			break;
	}
	if (l->active && l->io_error) {
		tunnel_fail(t, false, "%s", ssh_last_error(t));
		return;
	}
	/* With no channel to read through (the server refused a session channel and nothing
	 * is forwarded), unread bytes would keep the socket readable: wait for a channel;
	 * keepalive_tick watches the kernel's byte count meanwhile. */
	if (l->active && l->step == LINK_READY) {
		if (!l->rx_drained && list_empty(&t->open_queue) && !forward_drain(t))
			ev_io_stop(t->loop, &l->rio);
		else
			ev_io_start(t->loop, &l->rio);
	}
}

void tunnel_want_pump(struct tunnel *t)
{
	t->pump_wanted = true;
	ev_prepare_start(t->loop, &t->flush);
}

/* Runs once per loop iteration before the loop blocks: pumps if libssh2 buffered input
 * outside a pump, then sends everything libssh2 queued in one go. */
static void flush_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
	struct tunnel *t = w->data;

	if (t->pump_wanted && t->link.active)
		tunnel_pump(t);
	t->pump_wanted = false;
	if (link_flush(t) < 0) {
		tunnel_fail(t, false, "send to server: %s", strerror(t->link.io_error));
		return;
	}
	ev_prepare_stop(loop, w);
}

static int listener_open(struct tunnel *t, const struct forward_spec *f)
{
	if (t->listen)
		return t->listen->open(t->listen->userdata, f->listen_host, f->listen_port);
	return net_listen(f->listen_host, f->listen_port);
}

static void listener_close(struct tunnel *t, int fd)
{
	if (t->listen)
		t->listen->close(t->listen->userdata, fd);
	else
		close(fd);
}

int tunnel_create(struct ev_loop *loop, const struct tunnel_config *cfg,
		  struct identity *identity, const struct listen_ops *listen,
		  struct tunnel **ret, char *err, size_t err_size)
{
	struct tunnel *t = calloc(1, sizeof(*t));
	int r;

	if (!t) {
		identity_finish(identity);
		snprintf(err, err_size, "out of memory");
		return -ENOMEM;
	}
	t->identity = *identity;
	memset(identity, 0, sizeof(*identity));
	t->loop = loop;
	t->listen = listen;
	t->cfg = cfg;
	t->state = TUNNEL_CONNECTING;
	clock_gettime(CLOCK_REALTIME, &t->since);
	t->since_mono = ev_now(loop);
	list_init(&t->conns);
	list_init(&t->open_queue);
	t->link.fd = -1;
	ev_timer_init(&t->timer, timer_cb, 1.0, 0.0);
	t->timer.data = t;
	ev_prepare_init(&t->flush, flush_cb);
	t->flush.data = t;
	ev_init(&t->probe_timer, NULL);
	rtt_init(&t->rtt);
	t->health = HEALTH_DOWN;
	backoff_init(&t->backoff, cfg->backoff_initial_ms, cfg->backoff_max_ms,
		     (uint64_t)getpid() * 2654435761u ^ (uint64_t)(uintptr_t)t);
	t->n_forwards = cfg->n_forwards;
	t->stats = calloc(cfg->n_forwards ? cfg->n_forwards : 1, sizeof(*t->stats));
	t->listeners = calloc(cfg->n_forwards ? cfg->n_forwards : 1, sizeof(*t->listeners));
	if (!t->stats || !t->listeners) {
		snprintf(err, err_size, "out of memory");
		tunnel_destroy(t);
		return -ENOMEM;
	}
	for (size_t i = 0; i < cfg->n_forwards; i++)
		t->listeners[i].fd = -1;
	for (size_t i = 0; i < cfg->n_forwards; i++) {
		const struct forward_spec *f = &cfg->forwards[i];
		struct listener *li = &t->listeners[i];

		li->tunnel = t;
		li->forward = i;
		if (f->kind != FORWARD_LOCAL)
			continue;
		li->fd = listener_open(t, f);
		if (li->fd < 0) {
			snprintf(err, err_size, "cannot listen on %s:%u: %s", f->listen_host,
				 f->listen_port, strerror(-li->fd));
			r = li->fd;
			tunnel_destroy(t);
			return r;
		}
		ev_io_init(&li->io, forward_accept_cb, li->fd, EV_READ);
		li->io.data = li;
		ev_timer_init(&li->pause, forward_pause_cb, 0.1, 0.0);
		li->pause.data = li;
	}
	*ret = t;
	return 0;
}

void tunnel_start(struct tunnel *t)
{
	for (size_t i = 0; i < t->n_forwards; i++)
		if (t->listeners[i].fd >= 0)
			ev_io_start(t->loop, &t->listeners[i].io);
	log_info("tunnel %s: connecting to %s@%s:%u", t->cfg->name, t->cfg->user, t->cfg->host,
		 t->cfg->port);
	connect_begin(t, NULL);
}

void tunnel_reconnect(struct tunnel *t, const char *why)
{
	probe_stop(t);
	forward_tunnel_down(t);
	link_close(t, true);
	backoff_reset(&t->backoff);
	if (t->state == TUNNEL_CONNECTING)
		log_info("tunnel %s: connecting again: %s", t->cfg->name, why);
	connect_begin(t, why);
}

void tunnel_destroy(struct tunnel *t)
{
	if (!t)
		return;
	ev_timer_stop(t->loop, &t->timer);
	probe_stop(t);
	forward_tunnel_down(t);
	{
		struct list *pos, *tmp;

		list_for_each_safe(pos, tmp, &t->conns)
		    conn_destroy(list_entry(pos, struct conn, link));
	}
	link_close(t, true);
	for (size_t i = 0; t->listeners && i < t->n_forwards; i++) {
		struct listener *li = &t->listeners[i];

		if (li->fd < 0)
			continue;
		ev_io_stop(t->loop, &li->io);
		ev_timer_stop(t->loop, &li->pause);
		listener_close(t, li->fd);
	}
	/* last: closing conns and the link above may have asked for one more pump */
	ev_prepare_stop(t->loop, &t->flush);
	identity_finish(&t->identity);
	free(t->listeners);
	free(t->stats);
	free(t);
}

int tunnel_snapshot(const struct tunnel *t, struct status_tunnel *out)
{
	const struct tunnel_config *cfg = t->cfg;

	memset(out, 0, sizeof(*out));
	snprintf(out->name, sizeof(out->name), "%s", cfg->name);
	out->state = t->state;
	out->health = t->health;
	out->rtt_measured = t->rtt.measured;
	out->rtt = t->rtt.srtt;
	out->rtt_last = t->rtt.last;
	out->since = t->since;
	snprintf(out->host, sizeof(out->host), "%s", cfg->host);
	out->port = cfg->port;
	snprintf(out->user, sizeof(out->user), "%s", cfg->user);
	out->reconnects = t->reconnects;
	snprintf(out->last_error, sizeof(out->last_error), "%s", t->last_error);
	out->auth_failure = t->auth_failure;
	out->forwards = calloc(t->n_forwards ? t->n_forwards : 1, sizeof(*out->forwards));
	if (!out->forwards)
		return -ENOMEM;
	out->n_forwards = t->n_forwards;
	for (size_t i = 0; i < t->n_forwards; i++) {
		struct status_forward *sf = &out->forwards[i];
		const struct forward_stats *st = &t->stats[i];

		sf->kind = cfg->forwards[i].kind;
		fwdspec_format_listen(&cfg->forwards[i], sf->listen, sizeof(sf->listen));
		fwdspec_format_target(&cfg->forwards[i], sf->target, sizeof(sf->target));
		sf->active = st->active;
		sf->connections_total = st->connections_total;
		sf->bytes_in = st->bytes_in;
		sf->bytes_out = st->bytes_out;
		sf->open_failures = st->open_failures;
		memcpy(sf->rejected, st->rejected, sizeof(sf->rejected));
		sf->target_state = st->target_state;
		snprintf(sf->target_error, sizeof(sf->target_error), "%s", st->target_error);
		sf->probe_rtt_measured = st->probe_rtt_measured;
		sf->probe_rtt = st->probe_rtt;
		sf->probe_failures = st->probe_failures;
	}
	return 0;
}
