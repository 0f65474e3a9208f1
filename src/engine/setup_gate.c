#include "setup_gate.h"

#include <stddef.h>

/* One gate per process: the daemon runs one loop, and its set-ups share one CPU budget. */
static struct {
	struct ev_loop *loop;
	ev_timer admit; /* hands free slots to the queue, from the loop */
	unsigned running, waiting;
	struct setup_ticket *head, *tail;
} gate;

static void unqueue(struct setup_ticket *t)
{
	if (t->prev)
		t->prev->next = t->next;
	else
		gate.head = t->next;
	if (t->next)
		t->next->prev = t->prev;
	else
		gate.tail = t->prev;
	t->prev = t->next = NULL;
	t->waiting = false;
	gate.waiting--;
}

static void admit_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	/* go() may fail at once and leave again: the loop then hands that slot on too */
	while (gate.head && gate.running < SETUP_GATE_MAX) {
		struct setup_ticket *t = gate.head;

		unqueue(t);
		t->held = true;
		gate.running++;
		t->go(t);
	}
}

static void admit_soon(void)
{
	if (gate.head && gate.running < SETUP_GATE_MAX && !ev_is_active(&gate.admit)) {
		ev_timer_set(&gate.admit, 0., 0.);
		ev_timer_start(gate.loop, &gate.admit);
	}
}

bool setup_gate_enter(struct ev_loop *loop, struct setup_ticket *t, setup_go_fn go)
{
	if (gate.loop != loop) {
		if (gate.loop && ev_is_active(&gate.admit))
			ev_timer_stop(gate.loop, &gate.admit);
		gate.loop = loop;
		ev_init(&gate.admit, admit_cb);
	}
	t->go = go;
	if (!gate.head && gate.running < SETUP_GATE_MAX) {
		t->held = true;
		gate.running++;
		return true;
	}
	t->waiting = true;
	t->next = NULL;
	t->prev = gate.tail;
	if (gate.tail)
		gate.tail->next = t;
	else
		gate.head = t;
	gate.tail = t;
	gate.waiting++;
	admit_soon();
	return false;
}

void setup_gate_leave(struct setup_ticket *t)
{
	if (t->waiting)
		unqueue(t);
	if (t->held) {
		t->held = false;
		gate.running--;
	}
	if (gate.head)
		admit_soon();
	else if (gate.loop && !gate.running)
		ev_timer_stop(gate.loop, &gate.admit);
}

unsigned setup_gate_running(void)
{
	return gate.running;
}

unsigned setup_gate_waiting(void)
{
	return gate.waiting;
}
