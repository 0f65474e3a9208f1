#pragma once
#include "status.h"

/*
 * The tunnel's state machine as a table (pure): what each event makes of each state.
 *
 *   connecting --ready--> up --fail--> backoff --timer--> connecting
 *   connecting --fail or timer (connect_timeout)--> backoff
 *   any --reconnect or start--> connecting
 */
enum tunnel_event {
	TUNNEL_EVENT_START,	/* tunnel_start */
	TUNNEL_EVENT_READY,	/* authenticated, remote forwards requested */
	TUNNEL_EVENT_FAIL,	/* the session failed or could not be made */
	TUNNEL_EVENT_TIMER,	/* backoff over, or connect_timeout reached */
	TUNNEL_EVENT_RECONNECT, /* moletun ctl reconnect */
};

/* The next state; the same state when the event means nothing there (a stray timer). */
enum tunnel_state tunnel_next_state(enum tunnel_state s, enum tunnel_event e);
