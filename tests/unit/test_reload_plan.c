#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "reload_plan.h"

/* A tunnel section that loads without files: the agent, no host key checking. */
#define SECTION(name, port, listen)                                                                \
	"[tunnel:" name "]\nhost = db.example.com\nport = " port "\nuser = tunnel\n"               \
	"use_agent = yes\nstrict_host_key_checking = no\nlocal_forward = 127.0.0.1:" listen        \
	" pg_main:5432\n"

static struct config *load(const char *text)
{
	struct config *c = NULL;
	struct diag d;

	diag_init(&d);
	if (config_load_buffer("/tmp/reload-plan-test.conf", text, strlen(text), false, &c, &d) <
	    0) {
		for (size_t i = 0; i < d.count; i++)
			print_error("%s\n", d.messages[i]);
		fail();
	}
	diag_finish(&d);
	return c;
}

static void plan(const struct config *a, const struct config *b, struct reload_plan *p)
{
	const struct tunnel_config *old[8];

	assert_true(a->n_tunnels <= 8);
	for (size_t i = 0; i < a->n_tunnels; i++)
		old[i] = &a->tunnels[i];
	assert_int_equal(reload_plan_build(old, a->n_tunnels, b, p), 0);
}

/* Kept, restarted (a key changed), removed and added, with the new order followed. */
static void test_every_verdict(void **state)
{
	struct config *a = load(SECTION("t1", "22", "5433") SECTION("t2", "22", "5434")
				    SECTION("t3", "22", "5435"));
	struct config *b = load(SECTION("t4", "22", "5436") SECTION("t2", "2222", "5434")
				    SECTION("t1", "22", "5433"));
	struct reload_plan p;

	plan(a, b, &p);
	assert_int_equal(p.n_old, 3);
	assert_int_equal(p.n_next, 3);
	assert_int_equal(p.old[0].verdict, RELOAD_KEEP);
	assert_int_equal(p.old[0].kept_as, 2);
	assert_int_equal(p.old[1].verdict, RELOAD_RESTART);
	assert_string_equal(p.old[1].changed, "port");
	assert_false(p.old[1].contents);
	assert_int_equal(p.old[2].verdict, RELOAD_REMOVE);
	assert_int_equal(p.kept_from[0], RELOAD_NONE); /* t4 starts */
	assert_int_equal(p.kept_from[1], RELOAD_NONE); /* t2 restarts */
	assert_int_equal(p.kept_from[2], 0);	       /* t1 kept */
	reload_plan_free(&p);
	config_free(a);
	config_free(b);
}

/* Nothing running, or nothing left: every section starts, or every tunnel goes. */
static void test_empty_sides(void **state)
{
	struct config *none = load("[moletun]\n");
	struct config *two = load(SECTION("t1", "22", "5433") SECTION("t2", "22", "5434"));
	struct reload_plan p;

	plan(none, two, &p);
	assert_int_equal(p.n_old, 0);
	assert_int_equal(p.kept_from[0], RELOAD_NONE);
	assert_int_equal(p.kept_from[1], RELOAD_NONE);
	reload_plan_free(&p);
	plan(two, none, &p);
	assert_int_equal(p.n_next, 0);
	assert_int_equal(p.old[0].verdict, RELOAD_REMOVE);
	assert_int_equal(p.old[1].verdict, RELOAD_REMOVE);
	reload_plan_free(&p);
	/* the same configuration again: everything kept, in place */
	plan(two, two, &p);
	assert_int_equal(p.old[0].verdict, RELOAD_KEEP);
	assert_int_equal(p.old[1].verdict, RELOAD_KEEP);
	assert_int_equal(p.kept_from[0], 0);
	assert_int_equal(p.kept_from[1], 1);
	reload_plan_free(&p);
	config_free(none);
	config_free(two);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_every_verdict),
	    cmocka_unit_test(test_empty_sides),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
