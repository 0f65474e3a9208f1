#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "backoff.h"

/* Every delay lies in [d/2, d] for the nominal d = initial * 2^n capped at max. */
static void test_doubles_within_jitter_bounds(void **state)
{
	struct backoff b;
	uint64_t nominal = 100;

	backoff_init(&b, 100, 1000, 42);
	for (int i = 0; i < 10; i++) {
		uint64_t d = backoff_next(&b);

		assert_true(d >= (nominal + 1) / 2);
		assert_true(d <= nominal);
		nominal = nominal * 2 > 1000 ? 1000 : nominal * 2;
	}
}

static void test_never_exceeds_max(void **state)
{
	struct backoff b;

	backoff_init(&b, 100, 1000, 7);
	for (int i = 0; i < 10000; i++)
		assert_true(backoff_next(&b) <= 1000);
	/* after many failures it stays in the top band, it never drifts down */
	for (int i = 0; i < 1000; i++)
		assert_true(backoff_next(&b) >= 500);
}

static void test_reset_starts_over(void **state)
{
	struct backoff b;

	backoff_init(&b, 100, 1000, 1);
	for (int i = 0; i < 20; i++)
		backoff_next(&b);
	backoff_reset(&b);
	assert_true(backoff_next(&b) <= 100);
}

static void test_jitter_spreads(void **state)
{
	struct backoff a, b;
	int differ = 0;
	uint64_t lo = UINT64_MAX, hi = 0;

	backoff_init(&a, 1000, 1000, 1);
	backoff_init(&b, 1000, 1000, 2);
	for (int i = 0; i < 1000; i++) {
		uint64_t x = backoff_next(&a), y = backoff_next(&b);

		differ += x != y;
		lo = x < lo ? x : lo;
		hi = x > hi ? x : hi;
	}
	/* two nodes with different seeds do not retry in lockstep */
	assert_true(differ > 900);
	/* and the spread covers most of [500, 1000] */
	assert_true(lo < 550);
	assert_true(hi > 950);
}

static void test_deterministic_for_a_seed(void **state)
{
	struct backoff a, b;

	backoff_init(&a, 100, 5000, 99);
	backoff_init(&b, 100, 5000, 99);
	for (int i = 0; i < 50; i++)
		assert_int_equal(backoff_next(&a), backoff_next(&b));
}

static void test_max_below_initial_is_clamped(void **state)
{
	struct backoff b;

	backoff_init(&b, 800, 100, 3);
	for (int i = 0; i < 10; i++)
		assert_true(backoff_next(&b) <= 800);
}

static void test_auth_pace_never_sooner(void **state)
{
	struct backoff b;
	uint64_t lo = UINT64_MAX, hi = 0;

	backoff_init(&b, 100, 1000, 11);
	for (int i = 0; i < 1000; i++) {
		uint64_t d = backoff_pace(&b, 60000);

		lo = d < lo ? d : lo;
		hi = d > hi ? d : hi;
	}
	assert_true(lo >= 60000);
	assert_true(hi <= 66000);
	assert_true(hi > lo);
}

static void test_fixed_pace_jitter(void **state)
{
	struct backoff b;

	backoff_init(&b, 100, 1000, 5);
	for (int i = 0; i < 1000; i++) {
		uint64_t d = backoff_jitter(&b, 60000);

		assert_true(d >= 30000 && d <= 60000);
	}
	assert_int_equal(backoff_jitter(&b, 0), 0);
	assert_true(backoff_jitter(&b, 1) <= 1);
}

static void test_after_failure(void **state)
{
	struct backoff b;
	uint64_t d;

	backoff_init(&b, 100, 1000, 7);
	/* network failures climb the curve */
	for (int i = 0; i < 5; i++)
		backoff_next(&b);
	d = backoff_after_failure(&b, BACKOFF_NETWORK, -1, 5.0, 60000);
	assert_in_range(d, 500, 1000);
	/* a session that was up long enough starts the curve over */
	d = backoff_after_failure(&b, BACKOFF_NETWORK, 5.0, 5.0, 60000);
	assert_in_range(d, 50, 100);
	/* a short-lived one does not */
	d = backoff_after_failure(&b, BACKOFF_NETWORK, 4.9, 5.0, 60000);
	assert_in_range(d, 100, 200);
	/* a failure that needs a human waits the slow pace, never sooner */
	d = backoff_after_failure(&b, BACKOFF_HUMAN, -1, 5.0, 60000);
	assert_in_range(d, 60000, 66000);
}

/* Refused connects: a fixed pace that never grows and never beats 10 a second, whatever
 * the curve had reached; the curve is left where it was. */
static void test_refused_quick_pace(void **state)
{
	struct backoff b;
	uint64_t lo = UINT64_MAX, hi = 0;

	backoff_init(&b, 100, 1000, 13);
	for (int i = 0; i < 6; i++)
		backoff_after_failure(&b, BACKOFF_NETWORK, -1, 5.0, 60000);
	for (int i = 0; i < BACKOFF_REFUSED_MAX; i++) {
		uint64_t d = backoff_after_failure(&b, BACKOFF_REFUSED, -1, 5.0, 60000);

		lo = d < lo ? d : lo;
		hi = d > hi ? d : hi;
	}
	assert_true(lo >= BACKOFF_REFUSED_MS);
	assert_true(hi <= BACKOFF_REFUSED_MS * 11 / 10);
	assert_true(hi > lo); /* jittered */
	/* the curve is where the network failures left it */
	assert_int_equal(b.current_ms, 1000);
}

/* After BACKOFF_REFUSED_MAX refusals in a row the server is down, not restarting: the curve
 * takes over, and stays until something else happens. */
static void test_refused_run_falls_back_to_curve(void **state)
{
	struct backoff b;
	uint64_t d;

	backoff_init(&b, 100, 1000, 17);
	for (int i = 0; i < BACKOFF_REFUSED_MAX; i++)
		assert_in_range(backoff_after_failure(&b, BACKOFF_REFUSED, -1, 5.0, 60000),
				BACKOFF_REFUSED_MS, BACKOFF_REFUSED_MS * 11 / 10);
	d = backoff_after_failure(&b, BACKOFF_REFUSED, -1, 5.0, 60000);
	assert_in_range(d, 50, 100); /* the curve's first step */
	for (int i = 0; i < 10; i++)
		d = backoff_after_failure(&b, BACKOFF_REFUSED, -1, 5.0, 60000);
	assert_in_range(d, 500, 1000);
	/* a session that came up and stayed up starts over: quick again */
	d = backoff_after_failure(&b, BACKOFF_REFUSED, 5.0, 5.0, 60000);
	assert_in_range(d, BACKOFF_REFUSED_MS, BACKOFF_REFUSED_MS * 11 / 10);
}

/* Any other failure ends a run of refusals: the next refusal starts a new run. */
static void test_refused_run_ended_by_other_failure(void **state)
{
	struct backoff b;

	backoff_init(&b, 100, 1000, 19);
	for (int i = 0; i < BACKOFF_REFUSED_MAX - 1; i++)
		backoff_after_failure(&b, BACKOFF_REFUSED, -1, 5.0, 60000);
	assert_int_equal(b.refusals, BACKOFF_REFUSED_MAX - 1);
	assert_in_range(backoff_after_failure(&b, BACKOFF_NETWORK, -1, 5.0, 60000), 50, 100);
	assert_int_equal(b.refusals, 0);
	for (int i = 0; i < BACKOFF_REFUSED_MAX; i++)
		assert_in_range(backoff_after_failure(&b, BACKOFF_REFUSED, -1, 5.0, 60000),
				BACKOFF_REFUSED_MS, BACKOFF_REFUSED_MS * 11 / 10);
	/* auth failures keep their slow pace and end the run too */
	assert_in_range(backoff_after_failure(&b, BACKOFF_HUMAN, -1, 5.0, 60000), 60000, 66000);
	assert_int_equal(b.refusals, 0);
	backoff_reset(&b);
	assert_int_equal(b.refusals, 0);
}

/* backoff_max below the quick pace is still the longest wait (plus the pace's 10%). */
static void test_refused_pace_within_small_max(void **state)
{
	struct backoff b;

	backoff_init(&b, 10, 40, 23);
	for (int i = 0; i < 100; i++)
		assert_in_range(backoff_after_failure(&b, BACKOFF_REFUSED, -1, 5.0, 60000), 40, 44);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_doubles_within_jitter_bounds),
	    cmocka_unit_test(test_after_failure),
	    cmocka_unit_test(test_never_exceeds_max),
	    cmocka_unit_test(test_reset_starts_over),
	    cmocka_unit_test(test_jitter_spreads),
	    cmocka_unit_test(test_deterministic_for_a_seed),
	    cmocka_unit_test(test_max_below_initial_is_clamped),
	    cmocka_unit_test(test_fixed_pace_jitter),
	    cmocka_unit_test(test_auth_pace_never_sooner),
	    cmocka_unit_test(test_refused_quick_pace),
	    cmocka_unit_test(test_refused_run_falls_back_to_curve),
	    cmocka_unit_test(test_refused_run_ended_by_other_failure),
	    cmocka_unit_test(test_refused_pace_within_small_max),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
