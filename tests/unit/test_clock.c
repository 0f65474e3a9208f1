#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "clock.h"

static void assert_ts(struct timespec got, time_t sec, long nsec)
{
	if (got.tv_sec != sec || got.tv_nsec != nsec)
		fail_msg("%lld.%09ld != %lld.%09ld", (long long)got.tv_sec, got.tv_nsec,
			 (long long)sec, nsec);
}

static void test_to_wall_past(void **state)
{
	struct timespec wall = {.tv_sec = 1000, .tv_nsec = 100000000};

	/* 10.25 s ago: borrows a second from the nanoseconds */
	assert_ts(clock_to_wall_at(90.0, 100.25, wall), 989, 850000000);
	assert_ts(clock_to_wall_at(100.25, 100.25, wall), 1000, 100000000);
	/* whole seconds keep the nanoseconds */
	assert_ts(clock_to_wall_at(40.0, 100.0, wall), 940, 100000000);
}

static void test_to_wall_future(void **state)
{
	struct timespec wall = {.tv_sec = 1000, .tv_nsec = 700000000};

	/* 2.5 s to come: carries into the seconds */
	assert_ts(clock_to_wall_at(102.5, 100.0, wall), 1003, 200000000);
}

/* A wall-clock step moves the date a monotonic instant prints as, never its age. */
static void test_to_wall_follows_a_step(void **state)
{
	struct timespec before = {.tv_sec = 1000000, .tv_nsec = 0};
	struct timespec after = {.tv_sec = 1000000 - 7200 + 5, .tv_nsec = 0};

	assert_ts(clock_to_wall_at(50.0, 60.0, before), 999990, 0);
	/* 5 s later, the wall clock stepped back 2 h: still 15 s ago on the new wall clock */
	assert_ts(clock_to_wall_at(50.0, 65.0, after), 1000000 - 7200 - 10, 0);
}

static void test_readings_agree(void **state)
{
	double s = clock_now();
	int64_t ms = clock_now_ms();
	uint64_t us = clock_now_usec();
	double later = clock_now();

	assert_true(later >= s);
	assert_true((double)ms >= s * 1000.0 - 1.0 && (double)ms <= later * 1000.0 + 1.0);
	assert_true((double)us >= s * 1e6 - 1.0 && (double)us <= later * 1e6 + 1.0);
	assert_true(clock_wall().tv_sec > 1600000000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_to_wall_past),
	    cmocka_unit_test(test_to_wall_future),
	    cmocka_unit_test(test_to_wall_follows_a_step),
	    cmocka_unit_test(test_readings_agree),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
