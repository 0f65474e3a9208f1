#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "dialer.h"

/*
 * Real sockets on loopback. An unanswered SYN without a network namespace: a listener whose
 * accept queue is full (backlog 0, one connection queued) makes Linux drop new SYNs, and
 * the kernel resends them only after 1 s.
 */

struct outcome {
	bool called;
	int calls;
	int fd;
	int err;
	double at;
};

static void on_done(void *userdata, int fd, int err)
{
	struct outcome *o = userdata;

	o->called = true;
	o->calls++;
	o->fd = fd;
	o->err = err;
	o->at = clock_now();
}

static int listener(int backlog, struct sockaddr_in *ret)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, backlog), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	*ret = sa;
	return fd;
}

/* A loopback port nothing listens on (bound and closed again). */
static struct sockaddr_in closed_port(void)
{
	struct sockaddr_in sa;
	int fd = listener(1, &sa);

	close(fd);
	return sa;
}

static struct addrinfo addr_of(struct sockaddr_in *sa)
{
	return (struct addrinfo){.ai_family = AF_INET,
				 .ai_socktype = SOCK_STREAM,
				 .ai_addrlen = sizeof(*sa),
				 .ai_addr = (struct sockaddr *)sa};
}

static void run_until(struct ev_loop *loop, struct outcome *o, double seconds)
{
	double end = clock_now() + seconds;

	while (!o->called && clock_now() < end) {
		ev_run(loop, EVRUN_ONCE | EVRUN_NOWAIT);
		usleep(1000);
	}
}

static unsigned open_attempts(const struct dialer *d)
{
	unsigned n = 0;

	for (unsigned i = 0; i < DIALER_INFLIGHT_MAX; i++)
		n += d->att[i].fd >= 0;
	return n;
}

static void test_connects(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct sockaddr_in sa;
	int lfd = listener(16, &sa);
	struct addrinfo ai = addr_of(&sa);
	struct dialer d;
	struct outcome o = {0};

	assert_int_equal(dialer_start(&d, loop, &ai, 0.25, on_done, &o), 0);
	run_until(loop, &o, 2.0);
	assert_int_equal(o.calls, 1);
	assert_int_equal(o.err, 0);
	assert_true(o.fd >= 0);
	assert_int_equal(d.won_by, 1);
	assert_int_equal(d.attempts, 1);
	assert_int_equal(open_attempts(&d), 0);
	close(o.fd);
	close(lfd);
	ev_loop_destroy(loop);
}

/* Nothing listens: the dial fails with the refusal, at once or from the loop. */
static void test_refused(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct sockaddr_in sa = closed_port();
	struct addrinfo ai = addr_of(&sa);
	struct dialer d;
	struct outcome o = {0};
	int r = dialer_start(&d, loop, &ai, 0.05, on_done, &o);

	if (r == 0) {
		run_until(loop, &o, 2.0);
		assert_int_equal(o.calls, 1);
		assert_int_equal(o.fd, -1);
		r = o.err;
	} else {
		assert_false(o.called);
	}
	assert_int_equal(r, -ECONNREFUSED);
	assert_int_equal(open_attempts(&d), 0);
	ev_loop_destroy(loop);
}

/* The first address refuses, the second listens: it connects through the second. */
static void test_next_address_after_refusal(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct sockaddr_in refusing = closed_port(), listening;
	int lfd = listener(16, &listening);
	struct addrinfo second = addr_of(&listening), first = addr_of(&refusing);
	struct dialer d;
	struct outcome o = {0};

	first.ai_next = &second;
	assert_int_equal(dialer_start(&d, loop, &first, 10.0, on_done, &o), 0);
	run_until(loop, &o, 2.0);
	assert_int_equal(o.calls, 1);
	assert_int_equal(o.err, 0);
	assert_true(o.fd >= 0);
	close(o.fd);
	close(lfd);
	ev_loop_destroy(loop);
}

/*
 * A SYN dropped while the path is "down" (the accept queue full): fresh attempts join every
 * stagger, never more than DIALER_INFLIGHT_MAX at once; once the queue has room the next
 * attempt connects well before the kernel would resend the first SYN (1 s).
 */
static void test_unanswered_gets_fresh_attempts(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct sockaddr_in sa;
	int lfd = listener(0, &sa);
	int filler = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct addrinfo ai = addr_of(&sa);
	struct dialer d;
	struct outcome o = {0};
	unsigned most = 0;
	double opened;
	int queued;

	assert_int_equal(connect(filler, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(dialer_start(&d, loop, &ai, 0.05, on_done, &o), 0);
	/* 0.45 s: the first SYN's resend is still 0.55 s away */
	for (double end = clock_now() + 0.45; clock_now() < end && !o.called;) {
		ev_run(loop, EVRUN_ONCE | EVRUN_NOWAIT);
		most = open_attempts(&d) > most ? open_attempts(&d) : most;
		usleep(1000);
	}
	assert_false(o.called);
	assert_int_equal(most, DIALER_INFLIGHT_MAX);
	assert_true(d.attempts >= 6);
	/* room in the queue: "the path is back" */
	queued = accept(lfd, NULL, NULL);
	assert_true(queued >= 0);
	opened = clock_now();
	run_until(loop, &o, 2.0);
	assert_int_equal(o.calls, 1);
	assert_int_equal(o.err, 0);
	assert_true(o.fd >= 0);
	print_message("connected %.0f ms after the queue had room, by attempt %u of %u\n",
		      (o.at - opened) * 1000, d.won_by, d.attempts);
	assert_true(o.at - opened < 0.5);
	assert_true(d.won_by > 1);
	assert_int_equal(open_attempts(&d), 0);
	close(o.fd);
	close(queued);
	close(filler);
	close(lfd);
	ev_loop_destroy(loop);
}

static void spin(struct ev_loop *loop, double seconds)
{
	for (double end = clock_now() + seconds; clock_now() < end;) {
		ev_run(loop, EVRUN_ONCE | EVRUN_NOWAIT);
		usleep(1000);
	}
}

/* Stopped while in flight: no callback, every socket closed; stopping again is harmless,
 * and so is stopping a dialer that never started. */
static void test_stop(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct sockaddr_in sa;
	int lfd = listener(0, &sa);
	int filler = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct addrinfo ai = addr_of(&sa);
	struct dialer d, zero;
	struct outcome o = {0};

	memset(&zero, 0, sizeof(zero));
	dialer_stop(&zero);
	assert_int_equal(connect(filler, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(dialer_start(&d, loop, &ai, 0.02, on_done, &o), 0);
	spin(loop, 0.1);
	assert_true(open_attempts(&d) > 1);
	dialer_stop(&d);
	assert_int_equal(open_attempts(&d), 0);
	dialer_stop(&d);
	close(accept(lfd, NULL, NULL));
	spin(loop, 0.2);
	assert_false(o.called);
	close(filler);
	close(lfd);
	ev_loop_destroy(loop);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_connects),
	    cmocka_unit_test(test_refused),
	    cmocka_unit_test(test_next_address_after_refusal),
	    cmocka_unit_test(test_unanswered_gets_fresh_attempts),
	    cmocka_unit_test(test_stop),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
