#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <string.h>

#include "health.h"

#define MS 0.001

static void assert_near(double got, double want)
{
	double d = got > want ? got - want : want - got;

	if (d > 1e-9)
		fail_msg("%.9f != %.9f", got, want);
}

static void test_rtt_first_sample(void **state)
{
	struct rtt_estimator e;

	rtt_init(&e);
	assert_false(e.measured);
	rtt_sample(&e, 80 * MS);
	assert_true(e.measured);
	assert_near(e.last, 80 * MS);
	assert_near(e.srtt, 80 * MS);
	assert_near(e.rttvar, 40 * MS);
}

static void test_rtt_smoothing(void **state)
{
	struct rtt_estimator e;

	rtt_init(&e);
	rtt_sample(&e, 100 * MS);
	rtt_sample(&e, 200 * MS);
	/* RFC 6298: RTTVAR = 3/4 * 50 + 1/4 * |100 - 200|; SRTT = 7/8 * 100 + 1/8 * 200 */
	assert_near(e.rttvar, 62.5 * MS);
	assert_near(e.srtt, 112.5 * MS);
	assert_near(e.last, 200 * MS);
	assert_near(e.min, 100 * MS); /* the smallest sample, for the window policy */
	rtt_sample(&e, 90 * MS);
	assert_near(e.min, 90 * MS);

	/* One outlier moves the smoothed value by an eighth only. */
	rtt_init(&e);
	for (int i = 0; i < 50; i++)
		rtt_sample(&e, 10 * MS);
	rtt_sample(&e, 1010 * MS);
	assert_near(e.srtt, 135 * MS);
	/* A lasting change is followed: within 20 samples of 500 ms, past 450 ms. */
	for (int i = 0; i < 20; i++)
		rtt_sample(&e, 500 * MS);
	assert_true(e.srtt > 450 * MS && e.srtt < 500 * MS);

	/* A clock step backwards never gives a negative round trip. */
	rtt_sample(&e, -1);
	assert_near(e.last, 0);
	assert_true(e.srtt > 0);
}

static void test_health_down_wins(void **state)
{
	struct rtt_estimator e;

	rtt_init(&e);
	rtt_sample(&e, 5);
	assert_int_equal(health_decide(HEALTH_OK, TUNNEL_CONNECTING, &e, 1, true), HEALTH_DOWN);
	assert_int_equal(health_decide(HEALTH_OK, TUNNEL_BACKOFF, NULL, 0, false), HEALTH_DOWN);
}

static void test_health_target_down_wins_over_degraded(void **state)
{
	struct rtt_estimator e;

	rtt_init(&e);
	rtt_sample(&e, 5);
	assert_int_equal(health_decide(HEALTH_OK, TUNNEL_UP, &e, 1, true), HEALTH_TARGET_DOWN);
	assert_int_equal(health_decide(HEALTH_DEGRADED, TUNNEL_UP, &e, 1, true),
			 HEALTH_TARGET_DOWN);
	assert_int_equal(health_decide(HEALTH_TARGET_DOWN, TUNNEL_UP, &e, 1, false),
			 HEALTH_DEGRADED);
	assert_int_equal(health_decide(HEALTH_TARGET_DOWN, TUNNEL_UP, &e, 0, false), HEALTH_OK);
}

static void test_health_degraded_hysteresis(void **state)
{
	struct rtt_estimator e;

	rtt_init(&e);
	/* Not measured yet: no opinion on the RTT. */
	assert_int_equal(health_decide(HEALTH_OK, TUNNEL_UP, &e, 0.1, false), HEALTH_OK);
	e.measured = true;
	e.srtt = 0.1;
	assert_int_equal(health_decide(HEALTH_OK, TUNNEL_UP, &e, 0.1, false), HEALTH_OK);
	e.srtt = 0.101;
	assert_int_equal(health_decide(HEALTH_OK, TUNNEL_UP, &e, 0.1, false), HEALTH_DEGRADED);
	/* Stays degraded until below 80 % of the threshold. */
	e.srtt = 0.09;
	assert_int_equal(health_decide(HEALTH_DEGRADED, TUNNEL_UP, &e, 0.1, false),
			 HEALTH_DEGRADED);
	e.srtt = 0.079;
	assert_int_equal(health_decide(HEALTH_DEGRADED, TUNNEL_UP, &e, 0.1, false), HEALTH_OK);
	/* degraded_rtt 0 disables it. */
	e.srtt = 100;
	assert_int_equal(health_decide(HEALTH_DEGRADED, TUNNEL_UP, &e, 0, false), HEALTH_OK);
}

static void test_names(void **state)
{
	assert_string_equal(tunnel_health_str(HEALTH_OK), "ok");
	assert_string_equal(tunnel_health_str(HEALTH_DEGRADED), "degraded");
	assert_string_equal(tunnel_health_str(HEALTH_TARGET_DOWN), "target_down");
	assert_string_equal(tunnel_health_str(HEALTH_DOWN), "down");
	assert_string_equal(target_state_str(TARGET_UNKNOWN), "unknown");
	assert_string_equal(target_state_str(TARGET_REACHABLE), "reachable");
	assert_string_equal(target_state_str(TARGET_UNREACHABLE), "unreachable");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_rtt_first_sample),
	    cmocka_unit_test(test_rtt_smoothing),
	    cmocka_unit_test(test_health_down_wins),
	    cmocka_unit_test(test_health_target_down_wins_over_degraded),
	    cmocka_unit_test(test_health_degraded_hysteresis),
	    cmocka_unit_test(test_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
