#include "chanwin.h"

#include "clock.h"
#include "link.h"
#include "memacct.h"
#include "window.h"

/*
 * A channel's receive window granted by moletun (chanwin.h): the count of what is granted,
 * the epochs, the grants. The rule itself is window.c's.
 */

/*
 * When the loop woke up for the events at hand, on the monotonic clock: a window's epoch
 * measures the network, not the time the loop took to reach this channel among hundreds
 * (which would keep windows from growing on a busy daemon). ev_now() is that instant on
 * the wall clock; only the moment since then is taken from it, bounded, so a step of the
 * wall clock moves it by at most a second once.
 */
double chanwin_now(struct ev_loop *loop)
{
	double since = ev_time() - ev_now(loop);

	return clock_now() - (since > 0 && since < 1.0 ? since : 0);
}

void chanwin_init(struct chanwin *w, uint64_t base, uint64_t initial)
{
	*w = (struct chanwin){.window = base, .base = base, .initial = initial};
}

/*
 * Sends a grant that libssh2 could not send yet. It must go before anything else adjusts
 * this channel's window: libssh2 1.10 keeps the unsent packet and sends it on the next
 * adjust, but adds that call's amount to its count. 0, EAGAIN or a libssh2 error.
 */
int chanwin_flush(LIBSSH2_CHANNEL *ch, struct chanwin *w)
{
	unsigned int open;
	int rc;

	if (!w->pending)
		return 0;
	rc = libssh2_channel_receive_window_adjust2(ch, w->pending, 1, &open);
	if (rc == 0)
		w->pending = 0;
	return rc;
}

/* libssh2 1.10 tops the window up before a read that the open window would not cover
 * (_libssh2_channel_read): to what the channel opened with plus the read, at least its
 * minimum adjustment. With no window of its own, at most one read's worth. */
ssize_t chanwin_read(LIBSSH2_CHANNEL *ch, struct chanwin *w, char *buf, size_t len)
{
	uint64_t open = libssh2_channel_window_read_ex(ch, NULL, NULL);
	uint64_t topup;
	ssize_t n = libssh2_channel_read(ch, buf, len);

	if (open < w->initial / 4 * 3 + len) {
		topup = w->initial + len - open;
		w->committed += topup > LIBSSH2_CHANNEL_MINADJUST ? topup : LIBSSH2_CHANNEL_MINADJUST;
	}
	if (n > 0)
		w->committed -= w->committed > (uint64_t)n ? (uint64_t)n : w->committed;
	return n;
}

bool chanwin_count(struct chanwin *w, uint64_t n, uint64_t unreceived, struct ev_loop *loop)
{
	if (w->epoch_bytes == 0)
		w->epoch_start = chanwin_now(loop);
	w->epoch_bytes += n;
	return w->epoch_bytes >= w->window + unreceived;
}

void chanwin_judge(struct chanwin *w, const struct chanwin_view *v)
{
	enum memacct_stage stage = memacct_stage();
	/* the consumer received what was read, but what its socket still holds */
	uint64_t received = w->epoch_bytes > v->unreceived ? w->epoch_bytes - v->unreceived : 0;
	struct window_input in;
	uint64_t next;

	/* the fattest channels are granted nothing until what they were granted is read */
	if (stage >= MEMACCT_SHED && w->window > w->base) {
		w->window = w->base;
		w->epoch_bytes = 0;
		return;
	}
	if (v->max <= w->base || w->epoch_bytes == 0)
		return;
	in = (struct window_input){
	    .consumed = received,
	    .elapsed = v->now - w->epoch_start,
	    .rtt = v->rtt,
	    .window = w->window,
	    .base = w->base,
	    .max = v->max,
	    /* a grown window costs the budget twice (chanwin_held) */
	    .budget_left = window_budget_left() / 2,
	    .backlog = v->backlog,
	    .client_queued = v->behind,
	    .memory_tight = stage >= MEMACCT_NO_GROWTH,
	};
	next = window_next(&in);
	if (next != w->window || received >= w->window)
		w->epoch_bytes = 0;
	w->window = next;
}

uint64_t chanwin_held(const struct chanwin *w)
{
	uint64_t limit = w->window > w->base ? 2 * w->window : w->window;

	return w->committed > limit ? w->committed : limit;
}

/*
 * What may be granted beyond what is committed and what waits for the consumer: what the
 * server may make moletun hold stays within the window. A window that grew (its consumer
 * kept up with it) may also keep a window's worth waiting, so that a consumer a moment
 * late does not idle the path for a round trip: such a channel holds up to twice its
 * window.
 */
static uint64_t chanwin_room(const struct chanwin *w, uint64_t waiting)
{
	uint64_t used = w->committed + waiting;
	uint64_t limit = w->window > w->base ? 2 * w->window : w->window;

	return used < limit ? limit - used : 0;
}

/* Whether the room is worth a grant: a quarter of the window, as libssh2 tops up its own
 * (fewer adjust packets); smaller top-ups are left to libssh2's read. */
static bool chanwin_worth(const struct chanwin *w, uint64_t room)
{
	return !w->pending && room >= w->window / 4 && room >= LIBSSH2_CHANNEL_MINADJUST;
}

/* Counted as committed at once: a grant that could not be sent yet goes first at the next
 * read (chanwin_flush). */
int chanwin_grant(LIBSSH2_CHANNEL *ch, struct chanwin *w, uint64_t waiting)
{
	uint64_t room = chanwin_room(w, waiting);
	int rc;

	if (!chanwin_worth(w, room))
		return 0;
	if (room > UINT32_MAX / 2)
		room = UINT32_MAX / 2;
	w->pending = (uint32_t)room;
	w->committed += room;
	rc = chanwin_flush(ch, w);
	if (rc < 0 && rc != LIBSSH2_ERROR_EAGAIN && ssh_error_fatal(rc))
		return rc;
	return 0;
}

void chanwin_sync(LIBSSH2_CHANNEL *ch, struct chanwin *w)
{
	w->committed = libssh2_channel_window_read_ex(ch, NULL, NULL) + w->pending;
}

int chanwin_regrant(LIBSSH2_CHANNEL *ch, struct chanwin *w, uint64_t waiting)
{
	unsigned long queued = 0;

	if (!chanwin_worth(w, chanwin_room(w, waiting)))
		return 0;
	/* about to grant: what waits unread counts too (nothing, unless the read stopped early);
	 * a walk of the session's packets, so only then */
	libssh2_channel_window_read_ex(ch, &queued, NULL);
	w->committed += queued;
	return chanwin_grant(ch, w, waiting);
}

uint64_t chanwin_open(LIBSSH2_CHANNEL *ch, const struct chanwin *w)
{
	return libssh2_channel_window_read_ex(ch, NULL, NULL) + w->pending;
}
