#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "setup_gate.h"

#define N (SETUP_GATE_MAX + 3)

static struct setup_ticket tickets[N];
static int started[N], n_started;

static void go(struct setup_ticket *t)
{
	started[n_started++] = (int)(t - tickets);
}

/* go() that fails at once: the set-up leaves the gate inside go(). */
static void go_fail(struct setup_ticket *t)
{
	go(t);
	setup_gate_leave(t);
}

/* A fresh loop with every slot taken and the last three tickets waiting, with `late`. */
static struct ev_loop *crowd(setup_go_fn late)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);

	memset(tickets, 0, sizeof(tickets));
	n_started = 0;
	for (int i = 0; i < SETUP_GATE_MAX; i++)
		assert_true(setup_gate_enter(loop, &tickets[i], go));
	for (int i = SETUP_GATE_MAX; i < N; i++)
		assert_false(setup_gate_enter(loop, &tickets[i], late));
	return loop;
}

/* Everyone leaves: no slot stays taken. */
static void disperse(struct ev_loop *loop)
{
	for (int i = 0; i < N; i++)
		setup_gate_leave(&tickets[i]);
	assert_int_equal(setup_gate_running(), 0);
	assert_int_equal(setup_gate_waiting(), 0);
	ev_loop_destroy(loop);
}

static void test_first_come_first_served(void **state)
{
	struct ev_loop *loop = crowd(go);

	assert_int_equal(setup_gate_running(), SETUP_GATE_MAX);
	assert_int_equal(setup_gate_waiting(), 3);
	/* the second in line gives up before its turn */
	setup_gate_leave(&tickets[SETUP_GATE_MAX + 1]);
	assert_int_equal(setup_gate_waiting(), 2);
	/* two finish: the waiting ones start in order, from the loop, not from leave() */
	setup_gate_leave(&tickets[0]);
	setup_gate_leave(&tickets[5]);
	assert_int_equal(n_started, 0);
	ev_run(loop, EVRUN_NOWAIT);
	assert_int_equal(n_started, 2);
	assert_int_equal(started[0], SETUP_GATE_MAX);
	assert_int_equal(started[1], SETUP_GATE_MAX + 2);
	assert_int_equal(setup_gate_running(), SETUP_GATE_MAX);
	assert_int_equal(setup_gate_waiting(), 0);
	setup_gate_leave(&tickets[0]); /* twice: changes nothing */
	assert_int_equal(setup_gate_running(), SETUP_GATE_MAX);
	disperse(loop);
}

static void test_failing_start_hands_the_slot_on(void **state)
{
	struct ev_loop *loop = crowd(go_fail);

	setup_gate_leave(&tickets[0]);
	ev_run(loop, EVRUN_NOWAIT);
	/* each failed at once and gave its slot to the next */
	assert_int_equal(n_started, 3);
	assert_int_equal(setup_gate_waiting(), 0);
	assert_int_equal(setup_gate_running(), SETUP_GATE_MAX - 1);
	disperse(loop);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_first_come_first_served),
    cmocka_unit_test(test_failing_start_hands_the_slot_on),
};

int main(void)
{
	return cmocka_run_group_tests(tests, NULL, NULL);
}
