#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "window.h"

#define KIB (1024ull)
#define MIB (1024 * KIB)
#define MS  0.001

/* A channel at `window` that took a whole window in `elapsed` over an 80 ms path. */
static struct window_input whole_window(uint64_t window, double elapsed)
{
	return (struct window_input){
	    .consumed = window,
	    .elapsed = elapsed,
	    .rtt = 80 * MS,
	    .window = window,
	    .base = 512 * KIB,
	    .max = 32 * MIB,
	    .budget_left = 256 * MIB,
	    .backlog = false,
	};
}

static void test_grows_when_window_limited(void **state)
{
	struct window_input in = whole_window(512 * KIB, 80 * MS);

	/* a whole window per round trip: the window was the limit, double it */
	assert_int_equal(window_next(&in), 1 * MIB);
	in.elapsed = 119 * MS; /* within 1.5 round trips still counts */
	assert_int_equal(window_next(&in), 1 * MIB);
	in.elapsed = 0; /* the whole window in one burst */
	assert_int_equal(window_next(&in), 1 * MIB);
	in = whole_window(8 * MIB, 85 * MS);
	assert_int_equal(window_next(&in), 16 * MIB);
}

static void test_keeps_when_link_is_the_limit(void **state)
{
	/* 2 round trips for a window: the link (or the server) is slower than the window */
	struct window_input in = whole_window(16 * MIB, 160 * MS);

	assert_int_equal(window_next(&in), 16 * MIB);
	/* an epoch still running, within 4 round trips: no verdict yet */
	in = whole_window(16 * MIB, 300 * MS);
	in.consumed = 1 * MIB;
	assert_int_equal(window_next(&in), 16 * MIB);
}

static void test_halves_slow_or_idle_streams(void **state)
{
	struct window_input in = whole_window(16 * MIB, 400 * MS);

	/* a whole window took 5 round trips */
	assert_int_equal(window_next(&in), 8 * MIB);
	/* not even a whole window in 5 round trips (an idle channel's next bytes) */
	in.consumed = 100;
	assert_int_equal(window_next(&in), 8 * MIB);
	/* never below the window it opened with */
	in = whole_window(512 * KIB, 10.0);
	assert_int_equal(window_next(&in), 512 * KIB);
	in = whole_window(768 * KIB, 10.0);
	assert_int_equal(window_next(&in), 512 * KIB);
}

static void test_never_grows_for_a_slow_client(void **state)
{
	struct window_input in = whole_window(8 * MIB, 10 * MS);

	/* bytes had to wait for the client: no growth, however fast the window went */
	in.backlog = true;
	assert_int_equal(window_next(&in), 8 * MIB);
	/* the window took longer than a round trip and the client was behind: halve */
	in.elapsed = 130 * MS;
	assert_int_equal(window_next(&in), 4 * MIB);
	/* a client that stalled: its bytes were not read, an epoch far past 4 round trips */
	in.consumed = 64 * KIB;
	in.elapsed = 2.0;
	assert_int_equal(window_next(&in), 4 * MIB);
	in = whole_window(512 * KIB, 200 * MS);
	in.backlog = true;
	assert_int_equal(window_next(&in), 512 * KIB);
	/* an epoch still running with a backlog, within 4 round trips: keep */
	in = whole_window(8 * MIB, 200 * MS);
	in.consumed = 1 * MIB;
	in.backlog = true;
	assert_int_equal(window_next(&in), 8 * MIB);
}

static void test_capped_by_max(void **state)
{
	struct window_input in = whole_window(24 * MIB, 80 * MS);

	assert_int_equal(window_next(&in), 32 * MIB);
	in = whole_window(32 * MIB, 10 * MS);
	assert_int_equal(window_next(&in), 32 * MIB);
	/* a lower max after a reload: the window comes down to it */
	in.max = 4 * MIB;
	in.consumed = 1;
	in.elapsed = 0;
	assert_int_equal(window_next(&in), 4 * MIB);
}

static void test_capped_by_budget(void **state)
{
	struct window_input in = whole_window(4 * MIB, 80 * MS);

	in.budget_left = 1 * MIB;
	assert_int_equal(window_next(&in), 5 * MIB);
	in.budget_left = 0;
	assert_int_equal(window_next(&in), 4 * MIB);
	/* an empty budget never shrinks a window that is in use */
	in.elapsed = 100 * MS;
	assert_int_equal(window_next(&in), 4 * MIB);
}

static void test_off_and_unmeasured(void **state)
{
	struct window_input in = whole_window(512 * KIB, 10 * MS);

	/* channel_window_max 0 (or up to the base): the base, always */
	in.max = 0;
	assert_int_equal(window_next(&in), 512 * KIB);
	in.max = 512 * KIB;
	in.window = 4 * MIB;
	assert_int_equal(window_next(&in), 512 * KIB);
	/* no round trip measured yet: no verdict on speed */
	in = whole_window(2 * MIB, 10 * MS);
	in.rtt = 0;
	assert_int_equal(window_next(&in), 2 * MIB);
	in.elapsed = 100.0;
	assert_int_equal(window_next(&in), 2 * MIB);
	/* but a client that falls behind still shrinks it */
	in.backlog = true;
	assert_int_equal(window_next(&in), 1 * MIB);
}

static void test_loopback_counts_a_millisecond(void **state)
{
	/* 0.1 ms round trip, counted as WINDOW_RTT_MIN (1 ms) */
	struct window_input in = whole_window(512 * KIB, 1 * MS);

	(void)state;
	in.rtt = 0.1 * MS;
	/* a client that took 512K within 1 ms (500 MB/s): the window was the limit */
	assert_int_equal(window_next(&in), 1 * MIB);
	/* within 2 ms (250 MB/s): the client or the link was */
	in.elapsed = 2 * MS;
	assert_int_equal(window_next(&in), 512 * KIB);
	/* a grown window the client took in 5 ms: halved */
	in.window = 2 * MIB;
	in.consumed = 2 * MIB;
	in.elapsed = 5 * MS;
	assert_int_equal(window_next(&in), 1 * MIB);
}

/* The client's socket and the memory account, one rule per row (80 ms path, 8M window). */
static void test_client_queue_and_memory_table(void **state)
{
	static const struct {
		const char *what;
		uint64_t consumed;
		double elapsed_ms;
		uint64_t client_queued;
		bool memory_tight;
		uint64_t want;
	} rows[] = {
	    {"fast window, socket empty: grow", 8 * MIB, 80, 0, false, 16 * MIB},
	    {"fast window, a few bytes in flight: grow", 8 * MIB, 80, WINDOW_CLIENT_BACKLOG, false,
	     16 * MIB},
	    {"fast window, the kernel held bytes undelivered: keep", 8 * MIB, 80,
	     WINDOW_CLIENT_BACKLOG + 1, false, 8 * MIB},
	    {"fast window, a client that reads nothing (its socket full): keep", 8 * MIB, 10,
	     256 * KIB, false, 8 * MIB},
	    /* a burst fills a client socket's small queue for a moment: only time tells */
	    {"slow window, the kernel held bytes undelivered: keep", 8 * MIB, 130,
	     WINDOW_CLIENT_BACKLOG + 1, false, 8 * MIB},
	    {"slow window, socket empty: keep", 8 * MIB, 130, 0, false, 8 * MIB},
	    {"fast window, memory account tight: keep", 8 * MIB, 80, 0, true, 8 * MIB},
	    {"slow window, memory account tight: keep", 8 * MIB, 130, 0, true, 8 * MIB},
	    {"stalled stream, memory account tight: halve", 1 * MIB, 400, 0, true, 4 * MIB},
	    {"epoch running, socket backlog: keep", 1 * MIB, 200, 1 * MIB, false, 8 * MIB},
	};

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct window_input in = whole_window(8 * MIB, rows[i].elapsed_ms * MS);

		in.consumed = rows[i].consumed;
		in.client_queued = rows[i].client_queued;
		in.memory_tight = rows[i].memory_tight;
		print_message("%s\n", rows[i].what);
		assert_int_equal(window_next(&in), rows[i].want);
	}
	/* no round trip measured yet: a socket backlog stops nothing but growth */
	{
		struct window_input in = whole_window(2 * MIB, 10 * MS);

		in.rtt = 0;
		in.client_queued = 1 * MIB;
		assert_int_equal(window_next(&in), 2 * MIB);
	}
}

static void test_budget_count(void **state)
{
	uint64_t a = 0, b = 0;

	window_budget_set_limit(10 * MIB);
	assert_int_equal(window_budget_used(), 0);
	window_budget_charge(&a, 4 * MIB);
	window_budget_charge(&b, 5 * MIB);
	assert_int_equal(window_budget_used(), 9 * MIB);
	assert_int_equal(window_budget_left(), 1 * MIB);
	window_budget_charge(&a, 6 * MIB);
	assert_int_equal(a, 6 * MIB);
	/* over the limit (a grant raced a lower limit): nothing left, never negative */
	assert_int_equal(window_budget_left(), 0);
	window_budget_set_limit(2 * MIB);
	assert_int_equal(window_budget_left(), 0);
	window_budget_charge(&a, 0);
	window_budget_charge(&b, 0);
	assert_int_equal(window_budget_used(), 0);
	assert_int_equal(window_budget_left(), 2 * MIB);
	assert_int_equal(window_budget_limit(), 2 * MIB);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_grows_when_window_limited),
	    cmocka_unit_test(test_keeps_when_link_is_the_limit),
	    cmocka_unit_test(test_halves_slow_or_idle_streams),
	    cmocka_unit_test(test_never_grows_for_a_slow_client),
	    cmocka_unit_test(test_capped_by_max),
	    cmocka_unit_test(test_capped_by_budget),
	    cmocka_unit_test(test_off_and_unmeasured),
	    cmocka_unit_test(test_loopback_counts_a_millisecond),
	    cmocka_unit_test(test_client_queue_and_memory_table),
	    cmocka_unit_test(test_budget_count),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
