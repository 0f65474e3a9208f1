#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "memacct.h"

#define KIB (1024ull)
#define MIB (1024 * KIB)

static void test_stages_table(void **state)
{
	static const struct {
		uint64_t used, limit;
		enum memacct_stage want;
	} rows[] = {
	    {0, 160 * MIB, MEMACCT_OK},
	    {80 * MIB - 1, 160 * MIB, MEMACCT_OK},
	    {80 * MIB, 160 * MIB, MEMACCT_NO_GROWTH},
	    {120 * MIB - 1, 160 * MIB, MEMACCT_NO_GROWTH},
	    {120 * MIB, 160 * MIB, MEMACCT_SHED},
	    {140 * MIB - 1, 160 * MIB, MEMACCT_SHED},
	    {140 * MIB, 160 * MIB, MEMACCT_REFUSE_FAT},
	    {160 * MIB - 1, 160 * MIB, MEMACCT_REFUSE_FAT},
	    {160 * MIB, 160 * MIB, MEMACCT_FULL},
	    {1ull << 40, 160 * MIB, MEMACCT_FULL},
	    /* a limit too small to divide: anything is full, nothing overflows */
	    {0, 0, MEMACCT_FULL},
	    {0, 7, MEMACCT_OK},
	    {7, 7, MEMACCT_FULL},
	    {UINT64_MAX - 1, UINT64_MAX, MEMACCT_REFUSE_FAT},
	};

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		print_message("used %llu of %llu\n", (unsigned long long)rows[i].used,
			      (unsigned long long)rows[i].limit);
		assert_int_equal(memacct_stage_of(rows[i].used, rows[i].limit), rows[i].want);
	}
}

static void test_admit_table(void **state)
{
	static const struct {
		const char *what;
		uint64_t used, forward_held, cost;
		bool want;
	} rows[] = {
	    {"plenty of room", 10 * MIB, 0, 600 * KIB, true},
	    {"shedding, still admitted", 125 * MIB, 100 * MIB, 600 * KIB, true},
	    {"7/8: a forward holding little still comes in", 150 * MIB, 20 * MIB, 200 * KIB, true},
	    {"7/8: a forward holding more than 1/8 is refused", 150 * MIB, 20 * MIB + 1, 200 * KIB,
	     false},
	    {"the cost would pass the limit", 160 * MIB - 100 * KIB, 0, 200 * KIB, false},
	    {"the cost fits exactly", 160 * MIB - 200 * KIB, 0, 200 * KIB, true},
	    {"at the limit", 160 * MIB, 0, 0, false},
	    {"past the limit", 170 * MIB, 0, 1, false},
	    {"a cost that would overflow", 1 * MIB, 0, UINT64_MAX, false},
	};

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		print_message("%s\n", rows[i].what);
		assert_int_equal(
		    memacct_admit(rows[i].used, 160 * MIB, rows[i].forward_held, rows[i].cost),
		    rows[i].want);
	}
}

static void test_counts_and_peak(void **state)
{
	uint64_t a = 0, b = 0;

	memacct_set_limit(16 * MIB);
	assert_int_equal(memacct_limit(), 16 * MIB);
	assert_int_equal(memacct_used(), 0);
	memacct_add(MEMACCT_SESSION, 3 * MIB);
	memacct_charge(MEMACCT_WINDOW, &a, 5 * MIB);
	memacct_charge(MEMACCT_BUFFER, &b, 1 * MIB);
	assert_int_equal(memacct_used(), 9 * MIB);
	assert_int_equal(memacct_used_kind(MEMACCT_WINDOW), 5 * MIB);
	assert_int_equal(memacct_stage(), MEMACCT_NO_GROWTH);
	memacct_charge(MEMACCT_WINDOW, &a, 2 * MIB);
	assert_int_equal(a, 2 * MIB);
	assert_int_equal(memacct_used(), 6 * MIB);
	assert_int_equal(memacct_peak(), 9 * MIB);
	assert_int_equal(memacct_stage(), MEMACCT_OK);
	memacct_sub(MEMACCT_SESSION, 3 * MIB);
	memacct_charge(MEMACCT_WINDOW, &a, 0);
	memacct_charge(MEMACCT_BUFFER, &b, 0);
	assert_int_equal(memacct_used(), 0);
	for (int k = 0; k < MEMACCT_KINDS; k++)
		assert_int_equal(memacct_used_kind(k), 0);
	assert_int_equal(memacct_peak(), 9 * MIB);
}

static void test_names(void **state)
{
	assert_string_equal(memacct_kind_str(MEMACCT_SESSION), "session");
	assert_string_equal(memacct_kind_str(MEMACCT_SOCKET), "socket");
	assert_string_equal(memacct_kind_str(MEMACCT_KINDS), "unknown");
	assert_string_equal(memacct_stage_str(MEMACCT_OK), "ok");
	assert_string_equal(memacct_stage_str(MEMACCT_REFUSE_FAT), "refuse_fat");
	assert_string_equal(memacct_stage_str(MEMACCT_FULL), "full");
	assert_string_equal(memacct_stage_str(MEMACCT_FULL + 1), "unknown");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_stages_table),
	    cmocka_unit_test(test_admit_table),
	    cmocka_unit_test(test_counts_and_peak),
	    cmocka_unit_test(test_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
