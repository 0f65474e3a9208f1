#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "chanwin.h"
#include "memacct.h"
#include "window.h"

#define KIB (1024ull)
#define MIB (1024 * KIB)
#define MS  0.001

/* The judging side of a channel's window (no channel: no libssh2 call is made). */

static int setup(void **state)
{
	memacct_set_limit(1024 * MIB);
	window_budget_set_limit(64 * MIB);
	return 0;
}

/* A channel based at 2 MiB, at `window`, whose epoch began at 100 s with `bytes` read. */
static struct chanwin in_epoch(uint64_t window, uint64_t bytes)
{
	struct chanwin w;

	chanwin_init(&w, 2 * MIB, 0);
	w.window = window;
	w.epoch_bytes = bytes;
	w.epoch_start = 100.0;
	return w;
}

/* The consumer's view `elapsed` after the epoch began, over an 80 ms path: it took
 * everything read for it. */
static struct chanwin_view took(const struct chanwin *w, double elapsed)
{
	return (struct chanwin_view){
	    .now = w->epoch_start + elapsed, .rtt = 80 * MS, .max = 32 * MIB};
}

static void test_count_says_when_a_whole_window_came(void **state)
{
	struct chanwin w;

	chanwin_init(&w, 2 * MIB, 0);
	assert_false(chanwin_count(&w, 1 * MIB, 0, EV_DEFAULT));
	/* what still waits in the consumer's socket is not received yet */
	assert_false(chanwin_count(&w, 1 * MIB, 64 * KIB, EV_DEFAULT));
	assert_true(chanwin_count(&w, 64 * KIB, 64 * KIB, EV_DEFAULT));
}

static void test_grows_while_the_consumer_keeps_up(void **state)
{
	struct chanwin w = in_epoch(2 * MIB, 2 * MIB);
	struct chanwin_view v = took(&w, 70 * MS);

	chanwin_judge(&w, &v);
	assert_int_equal(w.window, 4 * MIB);
	assert_int_equal(w.epoch_bytes, 0); /* a new epoch */
	/* a grown window may hold a window's worth more waiting for its consumer */
	assert_int_equal(chanwin_held(&w), 8 * MIB);
}

static void test_no_growth_while_bytes_wait_for_the_consumer(void **state)
{
	struct chanwin w = in_epoch(2 * MIB, 3 * MIB);
	struct chanwin_view v = took(&w, 70 * MS);

	v.backlog = true;
	chanwin_judge(&w, &v);
	assert_int_equal(w.window, 2 * MIB);
	/* what its socket still holds is not received: 1 MiB of 3 is no whole window, and
	 * the epoch runs on */
	v.backlog = false;
	v.unreceived = 2 * MIB; /* received 1 MiB: not a whole window, the epoch runs on */
	w.epoch_bytes = 3 * MIB;
	chanwin_judge(&w, &v);
	assert_int_equal(w.window, 2 * MIB);
	assert_int_equal(w.epoch_bytes, 3 * MIB);
}

static void test_a_stalled_consumer_halves_to_the_base(void **state)
{
	struct chanwin w = in_epoch(16 * MIB, 1 * MIB);
	struct chanwin_view v = took(&w, 500 * MS); /* > 4 round trips, no whole window */

	v.backlog = true;
	v.unreceived = 1 * MIB;
	chanwin_judge(&w, &v);
	assert_int_equal(w.window, 8 * MIB);
	for (int i = 0; i < 5; i++) {
		w.epoch_bytes = 1;
		chanwin_judge(&w, &v);
	}
	assert_int_equal(w.window, 2 * MIB);
	/* not grown: it holds its window, or what was granted beyond it */
	assert_int_equal(chanwin_held(&w), 2 * MIB);
	w.committed = 3 * MIB;
	assert_int_equal(chanwin_held(&w), 3 * MIB);
}

static void test_off_below_the_base_and_shed_by_the_account(void **state)
{
	struct chanwin w = in_epoch(2 * MIB, 2 * MIB);
	struct chanwin_view v = took(&w, 70 * MS);

	v.max = 0; /* channel_window_max at or below the floor: no growth */
	chanwin_judge(&w, &v);
	assert_int_equal(w.window, 2 * MIB);

	w.window = 8 * MIB;
	memacct_add(MEMACCT_SESSION, 800 * MIB); /* past 3/4: the account sheds */
	v.max = 32 * MIB;
	chanwin_judge(&w, &v);
	assert_int_equal(w.window, 2 * MIB);
	assert_int_equal(w.epoch_bytes, 0);
	memacct_sub(MEMACCT_SESSION, 800 * MIB);
}

static void test_growth_stops_at_the_budget(void **state)
{
	struct chanwin w = in_epoch(2 * MIB, 2 * MIB);
	struct chanwin_view v = took(&w, 70 * MS);

	window_budget_set_limit(2 * MIB);
	chanwin_judge(&w, &v);
	/* a grown window costs the budget twice: half of what is left */
	assert_int_equal(w.window, 3 * MIB);
	window_budget_set_limit(64 * MIB);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_count_says_when_a_whole_window_came, setup),
	    cmocka_unit_test_setup(test_grows_while_the_consumer_keeps_up, setup),
	    cmocka_unit_test_setup(test_no_growth_while_bytes_wait_for_the_consumer, setup),
	    cmocka_unit_test_setup(test_a_stalled_consumer_halves_to_the_base, setup),
	    cmocka_unit_test_setup(test_off_below_the_base_and_shed_by_the_account, setup),
	    cmocka_unit_test_setup(test_growth_stops_at_the_budget, setup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
