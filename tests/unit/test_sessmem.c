#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sessmem.h"

/* Every byte counted on the way in is returned on the way out. */
static void test_counts_and_returns_to_zero(void **state)
{
	struct sessmem m;
	char *a, *b;

	sessmem_init(&m, 0);
	a = sessmem_alloc(&m, 100);
	b = sessmem_alloc(&m, 1000);
	assert_non_null(a);
	assert_non_null(b);
	assert_true(m.used >= 1100);
	memset(a, 1, 100);
	memset(b, 2, 1000);
	a = sessmem_realloc(&m, a, 5000);
	assert_non_null(a);
	assert_int_equal(a[99], 1);
	assert_true(m.used >= 6000);
	a = sessmem_realloc(&m, a, 10);
	assert_non_null(a);
	assert_true(m.used < 1100);
	sessmem_free(&m, a);
	sessmem_free(&m, b);
	sessmem_free(&m, NULL);
	assert_int_equal(m.used, 0);
	assert_true(m.peak >= 6000);
	assert_false(sessmem_over_cap(&m));
}

/* Over the cap: NULL, nothing counted, the first refused size recorded. */
static void test_refuses_over_cap(void **state)
{
	struct sessmem m;
	void *a, *b;

	sessmem_init(&m, 4096);
	a = sessmem_alloc(&m, 3000);
	assert_non_null(a);
	assert_null(sessmem_alloc(&m, 2000));
	assert_true(sessmem_over_cap(&m));
	assert_int_equal(m.refused, 2000);
	assert_null(sessmem_alloc(&m, 3000));
	assert_int_equal(m.n_refused, 2);
	assert_int_equal(m.refused, 2000);
	b = sessmem_alloc(&m, 500); /* what still fits is given */
	assert_non_null(b);
	sessmem_free(&m, a);
	sessmem_free(&m, b);
	assert_int_equal(m.used, 0);
}

/* A refused realloc leaves the block and the count as they were. */
static void test_refused_realloc_keeps_block(void **state)
{
	struct sessmem m;
	char *a;
	size_t used;

	sessmem_init(&m, 4096);
	a = sessmem_alloc(&m, 16);
	assert_non_null(a);
	strcpy(a, "kept");
	used = m.used;
	assert_null(sessmem_realloc(&m, a, 8192));
	assert_int_equal(m.used, used);
	assert_string_equal(a, "kept");
	sessmem_free(&m, a);
	a = sessmem_realloc(&m, NULL, 16); /* realloc of NULL allocates */
	assert_non_null(a);
	sessmem_free(&m, a);
	assert_int_equal(m.used, 0);
}

/* A length field from the network (an exit-signal's name length) cannot wrap the count. */
static void test_huge_sizes_refused(void **state)
{
	struct sessmem m;

	sessmem_init(&m, 32u << 20);
	assert_null(sessmem_alloc(&m, (size_t)UINT32_MAX + 0));
	assert_null(sessmem_alloc(&m, SIZE_MAX));
	assert_null(sessmem_alloc(&m, SIZE_MAX - 8));
	assert_int_equal(m.used, 0);
	assert_int_equal(m.refused, (size_t)UINT32_MAX);
	/* without a cap, a size that cannot be counted is still refused */
	sessmem_init(&m, 0);
	assert_null(sessmem_alloc(&m, SIZE_MAX - 8));
	assert_true(sessmem_over_cap(&m));
}

/* Blocks keep malloc's alignment behind the header. */
static void test_alignment(void **state)
{
	struct sessmem m;
	void *p[8];

	sessmem_init(&m, 0);
	for (size_t i = 0; i < 8; i++) {
		p[i] = sessmem_alloc(&m, i * 7 + 1);
		assert_int_equal((uintptr_t)p[i] % _Alignof(max_align_t), 0);
	}
	for (size_t i = 0; i < 8; i++)
		sessmem_free(&m, p[i]);
	assert_int_equal(m.used, 0);
}

static void test_release_all(void **state)
{
	struct sessmem m;
	void *a, *b, *c;

	sessmem_init(&m, 0);
	a = sessmem_alloc(&m, 48);
	b = sessmem_alloc(&m, 48);
	c = sessmem_alloc(&m, 100);
	assert_non_null(a);
	assert_non_null(b);
	assert_non_null(c);
	/* freed from the middle, the end and after a move: the list stays whole */
	sessmem_free(&m, b);
	c = sessmem_realloc(&m, c, 200);
	assert_non_null(c);
	/* what the owner forgot goes with the session */
	assert_int_equal(sessmem_release_all(&m), 2);
	assert_int_equal(m.used, 0);
	assert_null(m.blocks);
	assert_int_equal(sessmem_release_all(&m), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_counts_and_returns_to_zero),
	    cmocka_unit_test(test_refuses_over_cap),
	    cmocka_unit_test(test_refused_realloc_keeps_block),
	    cmocka_unit_test(test_huge_sizes_refused),
	    cmocka_unit_test(test_alignment),
	    cmocka_unit_test(test_release_all),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
