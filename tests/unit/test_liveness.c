#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "liveness.h"

/* keepalive_interval 5 s, keepalive_count_max 3: dead after 15 s, a keepalive every 5 s */
static struct liveness_input base(double now)
{
	return (struct liveness_input){
	    .now = now,
	    .last_rx = 100.0,
	    .last_tx = 100.0,
	    .keepalive_sent = 100.0,
	    .answers = true,
	    .interval = 5.0,
	    .count_max = 3,
	};
}

static void assert_near(double got, double want)
{
	double d = got > want ? got - want : want - got;

	if (d > 1e-9)
		fail_msg("%.6f != %.6f", got, want);
}

static void test_probe_after(void **state)
{
	assert_near(liveness_probe_after(5.0, 3), 5.0);
	assert_near(liveness_probe_after(5.0, 2), 5.0);
	/* one allowed interval: keepalives at half of it, so an answer can beat the deadline */
	assert_near(liveness_probe_after(5.0, 1), 2.5);
}

static void test_silence(void **state)
{
	struct liveness_input in = base(104.9);

	assert_int_equal(liveness_check(&in), LIVENESS_OK);
	in.now = 105.0;
	assert_int_equal(liveness_check(&in), LIVENESS_SEND);
	in.now = 115.0;
	assert_int_equal(liveness_check(&in), LIVENESS_DEAD_SILENT);
	in.now = 114.9;
	in.pending = true;
	in.keepalive_sent = 110.0;
	assert_int_equal(liveness_check(&in), LIVENESS_OK);
}

static void test_busy_link_still_sends_when_answers_are_seen(void **state)
{
	struct liveness_input in = base(106.0);

	in.last_rx = 105.9; /* data keeps arriving */
	assert_int_equal(liveness_check(&in), LIVENESS_SEND);
	/* global keepalives (no answers to see): only after silence */
	in.answers = false;
	assert_int_equal(liveness_check(&in), LIVENESS_OK);
}

static void test_server_that_stopped_reading(void **state)
{
	struct liveness_input in = base(116.0);

	/* bytes keep coming, the keepalive sent at 100 is unanswered */
	in.last_rx = 115.9;
	in.pending = true;
	assert_int_equal(liveness_check(&in), LIVENESS_DEAD_UNANSWERED);
	/* without answers to see, the send side tells: bytes waiting, none taken */
	in.answers = false;
	assert_int_equal(liveness_check(&in), LIVENESS_OK);
	in.out_len = 4096;
	in.last_tx = 101.0;
	assert_int_equal(liveness_check(&in), LIVENESS_DEAD_NOT_TAKEN);
	in.last_tx = 101.1;
	assert_int_equal(liveness_check(&in), LIVENESS_OK);
}

static void test_next_check(void **state)
{
	struct liveness_input in = base(100.0);

	/* just sent: the next keepalive is due after probe_after */
	assert_near(liveness_next_check(&in), 105.0);
	/* an answer is awaited past its time: look again soon, never past a deadline */
	in.now = 106.0;
	in.pending = true;
	assert_near(liveness_next_check(&in), 108.5);
	in.now = 113.0;
	assert_near(liveness_next_check(&in), 115.0);
	/* bytes waiting since 101: their deadline is 116 */
	in = base(100.0);
	in.keepalive_sent = 109.0;
	in.last_rx = 109.0;
	in.now = 109.0;
	in.out_len = 1;
	in.last_tx = 99.0;
	assert_near(liveness_next_check(&in), 114.0);
}

/* Times are monotonic: seconds after boot in a fresh container can be fewer than the
 * interval, and "no keepalive yet" (0) must not read as "one was just sent". */
static void test_first_keepalive_near_clock_zero(void **state)
{
	struct liveness_input in = base(2.0);

	in.last_rx = 1.5;
	in.last_tx = 1.5;
	in.keepalive_sent = 0;
	assert_int_equal(liveness_check(&in), LIVENESS_SEND);
	/* global keepalives: still only after silence */
	in.answers = false;
	assert_int_equal(liveness_check(&in), LIVENESS_OK);
	in.now = 6.5;
	assert_int_equal(liveness_check(&in), LIVENESS_SEND_GLOBAL);
	in.now = 16.5;
	assert_int_equal(liveness_check(&in), LIVENESS_DEAD_SILENT);
}

/* An answered keepalive is due while another channel open holds the session. */
static void test_blocked_by_another_open(void **state)
{
	struct liveness_input in = base(106.0);

	in.blocked = true;
	/* bytes keep arriving: nothing to do but wait for the open to end */
	in.last_rx = 105.9;
	assert_int_equal(liveness_check(&in), LIVENESS_OK);
	assert_near(liveness_next_check(&in), 110.9);
	/* silence for probe_after: a global request makes the server send something */
	in.last_rx = 101.0;
	assert_int_equal(liveness_check(&in), LIVENESS_SEND_GLOBAL);
	in.global_sent = 106.0;
	assert_int_equal(liveness_check(&in), LIVENESS_OK);
	assert_near(liveness_next_check(&in), 111.0);
	/* its reply came at 106.1; still held, still answered kind not sent */
	in.last_rx = 106.1;
	in.now = 111.0;
	assert_int_equal(liveness_check(&in), LIVENESS_OK);
	in.now = 111.1;
	assert_int_equal(liveness_check(&in), LIVENESS_SEND_GLOBAL);
	/* the server went quiet after that: dead after the whole bound of silence */
	in.global_sent = 111.1;
	assert_near(liveness_next_check(&in), 116.1);
	in.now = 121.2;
	assert_int_equal(liveness_check(&in), LIVENESS_DEAD_SILENT);
	/* the open ended: the answered kind goes at once, not a global one */
	in = base(106.0);
	in.last_rx = 101.0;
	assert_int_equal(liveness_check(&in), LIVENESS_SEND);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_probe_after),
	    cmocka_unit_test(test_silence),
	    cmocka_unit_test(test_busy_link_still_sends_when_answers_are_seen),
	    cmocka_unit_test(test_server_that_stopped_reading),
	    cmocka_unit_test(test_next_check),
	    cmocka_unit_test(test_first_keepalive_near_clock_zero),
	    cmocka_unit_test(test_blocked_by_another_open),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
