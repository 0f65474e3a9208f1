#include "dialer.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "net.h"

static void attempt_close(struct dialer *d, struct dialer_attempt *a)
{
	if (a->fd < 0)
		return;
	ev_io_stop(d->loop, &a->io);
	close(a->fd);
	a->fd = -1;
}

static unsigned in_flight(const struct dialer *d)
{
	unsigned n = 0;

	for (unsigned i = 0; i < DIALER_INFLIGHT_MAX; i++)
		n += d->att[i].fd >= 0;
	return n;
}

/* The address answered: its other attempts would hear the same. */
static void address_failed(struct dialer *d, unsigned addr, int err)
{
	d->failed |= 1u << addr;
	d->error = err;
	for (unsigned i = 0; i < DIALER_INFLIGHT_MAX; i++)
		if (d->att[i].fd >= 0 && d->att[i].addr == addr)
			attempt_close(d, &d->att[i]);
}

/* A free slot, or the oldest attempt's, which is closed: its SYN waits longest for the
 * kernel to resend it. */
static struct dialer_attempt *slot_take(struct dialer *d)
{
	struct dialer_attempt *oldest = &d->att[0];

	for (unsigned i = 0; i < DIALER_INFLIGHT_MAX; i++) {
		if (d->att[i].fd < 0)
			return &d->att[i];
		if (d->att[i].number < oldest->number)
			oldest = &d->att[i];
	}
	attempt_close(d, oldest);
	return oldest;
}

/* The dial ends: nothing of it is left running when done is called, and nothing touches
 * the dialer after (done may stop or reuse it, or free what holds it). */
static void dialer_finish(struct dialer *d, int fd, int err)
{
	dialer_done_fn done = d->done;
	void *userdata = d->userdata;

	dialer_stop(d);
	done(userdata, fd, err);
}

static void attempt_cb(struct ev_loop *loop, ev_io *w, int revents);

/* Starts an attempt on the next address that has not failed. 0, or the last error when
 * every address has. */
static int attempt_start(struct dialer *d)
{
	for (unsigned tried = 0; tried < d->n_addrs; tried++) {
		unsigned i = d->next;
		const struct addrinfo *ai = d->addrs[i];
		struct dialer_attempt *a;
		int fd, r;

		d->next = (d->next + 1) % d->n_addrs;
		if (d->failed & (1u << i))
			continue;
		r = net_connect_start(ai->ai_addr, ai->ai_addrlen, &fd);
		if (r < 0) {
			address_failed(d, i, r); /* at once: no route, or out of descriptors */
			continue;
		}
		a = slot_take(d);
		a->d = d;
		a->fd = fd;
		a->addr = i;
		a->number = ++d->attempts;
		a->started = clock_now();
		ev_io_init(&a->io, attempt_cb, fd, EV_WRITE);
		a->io.data = a;
		ev_io_start(d->loop, &a->io);
		if (d->stagger.repeat > 0)
			ev_timer_again(d->loop, &d->stagger);
		return 0;
	}
	return d->error ? d->error : -EADDRNOTAVAIL;
}

static void attempt_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct dialer_attempt *a = w->data;
	struct dialer *d = a->d;
	int r = net_connect_result(a->fd);

	if (r == 0) {
		int fd = a->fd;

		ev_io_stop(loop, &a->io);
		a->fd = -1; /* the winner's: not closed with the rest */
		d->won_by = a->number;
		d->won_after = clock_now() - a->started;
		dialer_finish(d, fd, 0);
		return;
	}
	address_failed(d, a->addr, r);
	if (in_flight(d) > 0)
		return;
	r = attempt_start(d);
	if (r < 0)
		dialer_finish(d, -1, r);
}

static void stagger_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct dialer *d = w->data;
	int r = attempt_start(d);

	/* with attempts still in flight, a failed address only means fewer to choose from */
	if (r < 0 && in_flight(d) == 0)
		dialer_finish(d, -1, r);
}

int dialer_start(struct dialer *d, struct ev_loop *loop, const struct addrinfo *addrs,
		 double stagger, dialer_done_fn done, void *userdata)
{
	int r;

	memset(d, 0, sizeof(*d));
	d->loop = loop;
	d->done = done;
	d->userdata = userdata;
	for (unsigned i = 0; i < DIALER_INFLIGHT_MAX; i++)
		d->att[i].fd = -1;
	for (; addrs && d->n_addrs < DIALER_ADDRS_MAX; addrs = addrs->ai_next)
		d->addrs[d->n_addrs++] = addrs;
	ev_timer_init(&d->stagger, stagger_cb, 0., stagger > 0 ? stagger : 0.);
	d->stagger.data = d;
	d->active = true;
	r = attempt_start(d);
	if (r < 0)
		dialer_stop(d);
	return r;
}

void dialer_stop(struct dialer *d)
{
	if (!d->active)
		return;
	ev_timer_stop(d->loop, &d->stagger);
	for (unsigned i = 0; i < DIALER_INFLIGHT_MAX; i++)
		attempt_close(d, &d->att[i]);
	d->active = false;
}
