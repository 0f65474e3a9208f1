#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "duration.h"

static uint64_t parse_ok(const char *text)
{
	uint64_t ms = 12345;

	assert_int_equal(duration_parse(text, &ms), 0);
	return ms;
}

/* A failed parse must leave the output alone. */
static void assert_parse_fails(const char *text, int expected)
{
	uint64_t ms = 777;

	assert_int_equal(duration_parse(text, &ms), expected);
	assert_int_equal(ms, 777);
}

static void test_zero(void **state)
{
	(void)state;
	assert_int_equal(parse_ok("0"), 0);
	assert_int_equal(parse_ok("0s"), 0);
	assert_int_equal(parse_ok("0ms"), 0);
	assert_int_equal(parse_ok("0h0m0s0ms"), 0);
}

static void test_bare_number_is_seconds(void **state)
{
	(void)state;
	assert_int_equal(parse_ok("5"), 5000);
	assert_int_equal(parse_ok("60"), 60000);
	assert_int_equal(parse_ok("007"), 7000);
}

static void test_single_units(void **state)
{
	(void)state;
	assert_int_equal(parse_ok("250ms"), 250);
	assert_int_equal(parse_ok("5s"), 5000);
	assert_int_equal(parse_ok("3m"), 180000);
	assert_int_equal(parse_ok("2h"), 7200000);
	assert_int_equal(parse_ok("90m"), 5400000);
}

static void test_combinations(void **state)
{
	(void)state;
	assert_int_equal(parse_ok("1h30m"), 5400000);
	assert_int_equal(parse_ok("1m30s"), 90000);
	assert_int_equal(parse_ok("1s500ms"), 1500);
	assert_int_equal(parse_ok("1h1m1s1ms"), 3661001);
	assert_int_equal(parse_ok("1h5s"), 3605000);
	assert_int_equal(parse_ok("1m5ms"), 60005);
	assert_int_equal(parse_ok("1d"), 86400000);
	assert_int_equal(parse_ok("1d12h"), 129600000);
	assert_parse_fails("1h1d", -EINVAL);
}

static void test_rejects_bad_syntax(void **state)
{
	(void)state;
	assert_parse_fails("-1s", -EINVAL);
	assert_parse_fails("-1", -EINVAL);
	assert_parse_fails("+5s", -EINVAL);
	assert_parse_fails("5x", -EINVAL);
	assert_parse_fails("x5", -EINVAL);
	assert_parse_fails("", -EINVAL);
	assert_parse_fails(NULL, -EINVAL);
	assert_parse_fails("s", -EINVAL);
	assert_parse_fails("ms", -EINVAL);
	assert_parse_fails("1.5s", -EINVAL);
	assert_parse_fails("5 s", -EINVAL);
	assert_parse_fails(" 5s", -EINVAL);
	assert_parse_fails("5s ", -EINVAL);
	assert_parse_fails("5S", -EINVAL);
	assert_parse_fails("1w", -EINVAL);
	assert_parse_fails("5sec", -EINVAL);
	assert_parse_fails("5mss", -EINVAL);
}

static void test_rejects_bad_order(void **state)
{
	(void)state;
	assert_parse_fails("30s1m", -EINVAL);
	assert_parse_fails("1s1s", -EINVAL);
	assert_parse_fails("5ms1s", -EINVAL);
	/* A unitless number is only allowed on its own. */
	assert_parse_fails("1m30", -EINVAL);
}

static void test_overflow(void **state)
{
	(void)state;
	assert_int_equal(parse_ok("18446744073709551615ms"), UINT64_MAX);
	assert_parse_fails("18446744073709551616ms", -ERANGE);
	assert_parse_fails("99999999999999999999999999999999ms", -ERANGE);
	assert_parse_fails("18446744073709552s", -ERANGE);
	assert_parse_fails("18446744073709552", -ERANGE);
	assert_parse_fails("5124095576030432h", -ERANGE);
	/* Each part fits, the sum does not. */
	assert_parse_fails("5124095576030431h18446744073709551615ms", -ERANGE);
	/* Syntax errors win over overflow. */
	assert_parse_fails("99999999999999999999999x", -EINVAL);
}

static const char *format(uint64_t ms)
{
	static char buf[64];

	duration_format(ms, buf, sizeof(buf));
	return buf;
}

static void test_format(void **state)
{
	(void)state;
	assert_string_equal(format(0), "0");
	assert_string_equal(format(250), "250ms");
	assert_string_equal(format(1000), "1s");
	assert_string_equal(format(5000), "5s");
	assert_string_equal(format(60000), "1m");
	assert_string_equal(format(90000), "1m30s");
	assert_string_equal(format(3600000), "1h");
	assert_string_equal(format(5400000), "1h30m");
	assert_string_equal(format(1500), "1500ms");
	assert_string_equal(format(3600001), "1h1ms");
	assert_string_equal(format(86400000), "1d");
	assert_string_equal(format(90000000), "1d1h");
	assert_string_equal(format(UINT64_MAX), "18446744073709551615ms");
}

static void test_format_small_buffer(void **state)
{
	char buf[4];

	(void)state;
	duration_format(5400000, buf, sizeof(buf));
	assert_string_equal(buf, "1h3");
	duration_format(5400000, buf, 0);
}

static void test_round_trip(void **state)
{
	static const uint64_t values[] = {0,	   1,	     999,	1000,		1001,
					  59999,   60000,    61500,	3599999,	3600000,
					  3661001, 86400000, 123456789, UINT64_MAX - 1, UINT64_MAX};

	(void)state;
	for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
		char buf[64];
		uint64_t back = 0;

		duration_format(values[i], buf, sizeof(buf));
		assert_int_equal(duration_parse(buf, &back), 0);
		assert_int_equal(back, values[i]);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_zero),
	    cmocka_unit_test(test_bare_number_is_seconds),
	    cmocka_unit_test(test_single_units),
	    cmocka_unit_test(test_combinations),
	    cmocka_unit_test(test_rejects_bad_syntax),
	    cmocka_unit_test(test_rejects_bad_order),
	    cmocka_unit_test(test_overflow),
	    cmocka_unit_test(test_format),
	    cmocka_unit_test(test_format_small_buffer),
	    cmocka_unit_test(test_round_trip),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
