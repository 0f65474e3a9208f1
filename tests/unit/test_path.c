#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <string.h>

#include "path.h"

static void fill(struct path *p)
{
	static const char *const hosts[] = {"bastion.example.com", "db.example.com"};

	for (size_t i = 0; i <= p->n_hops; i++) {
		p->params[i].host = hosts[i + 1 - p->n_hops];
		p->params[i].port = (uint16_t)(2200 + i);
	}
}

/* Nothing open yet (or closed again): the first link names its own host, none before it. */
static void test_step_before_anything_is_open(void **state)
{
	struct path p;
	char buf[200];

	assert_int_equal(path_init(&p, 0), 0);
	fill(&p);
	path_step_str(&p, buf, sizeof(buf));
	assert_string_equal(buf, "connecting to db.example.com:2200");
	path_finish(&p);

	assert_int_equal(path_init(&p, 1), 0);
	fill(&p);
	path_step_str(&p, buf, sizeof(buf));
	assert_string_equal(buf, "connecting to bastion.example.com:2200");
	path_finish(&p);
}

/* Past the first hop: the next link is waiting for its channel through the one before. */
static void test_step_waiting_for_channel(void **state)
{
	struct path p;
	char buf[200];

	assert_int_equal(path_init(&p, 1), 0);
	fill(&p);
	p.links[0].active = true;
	p.links[0].step = LINK_READY;
	path_step_str(&p, buf, sizeof(buf));
	assert_string_equal(
	    buf, "opening a channel to db.example.com:2201 via bastion.example.com:2200");
	p.links[1].active = true;
	p.links[1].step = LINK_HANDSHAKE;
	path_step_str(&p, buf, sizeof(buf));
	assert_string_equal(buf, "SSH banner and key exchange via bastion.example.com:2200");
	path_finish(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_step_before_anything_is_open),
	    cmocka_unit_test(test_step_waiting_for_channel),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
