#pragma once
#include <ev.h>
#include <stdbool.h>

/*
 * How many connection set-ups (TCP connect, SSH handshake, authentication, remote forward
 * requests) run at once in the daemon; the others wait their turn, first come first
 * served. A thousand tunnels started together would otherwise share the CPU (ours and the
 * server's) so thinly that none finishes within connect_timeout, and each retry starts the
 * whole crowd over: nothing ever comes up. With a bounded crowd each set-up takes about
 * as long as alone, and the rest follow as slots free up.
 */
#define SETUP_GATE_MAX 64

struct setup_ticket;
typedef void (*setup_go_fn)(struct setup_ticket *ticket);

struct setup_ticket {
	struct setup_ticket *prev, *next; /* the queue, while waiting */
	setup_go_fn go;			  /* called (from the loop) when the slot is free */
	bool waiting, held;
};

/*
 * Takes a slot for the ticket's set-up: true when it may start now (slots free and nobody
 * waiting), false when it waits; then go() starts it later, from the loop, never from
 * inside a setup_gate_* call. The ticket must not be in the gate already.
 */
bool setup_gate_enter(struct ev_loop *loop, struct setup_ticket *ticket, setup_go_fn go);

/* The set-up is over (done, failed or abandoned), or the ticket leaves the queue; a no-op
 * for a ticket outside the gate. The next in line gets the slot. */
void setup_gate_leave(struct setup_ticket *ticket);

/* Set-ups running and waiting (for tests and logs). */
unsigned setup_gate_running(void);
unsigned setup_gate_waiting(void);
