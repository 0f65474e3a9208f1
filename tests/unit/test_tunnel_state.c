#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "tunnel_state.h"

static void test_transitions(void **state)
{
	static const struct {
		enum tunnel_state from;
		enum tunnel_event e;
		enum tunnel_state to;
	} table[] = {
	    {TUNNEL_CONNECTING, TUNNEL_EVENT_START, TUNNEL_CONNECTING},
	    {TUNNEL_CONNECTING, TUNNEL_EVENT_READY, TUNNEL_UP},
	    {TUNNEL_CONNECTING, TUNNEL_EVENT_FAIL, TUNNEL_BACKOFF},
	    {TUNNEL_CONNECTING, TUNNEL_EVENT_TIMER, TUNNEL_BACKOFF}, /* connect_timeout */
	    {TUNNEL_CONNECTING, TUNNEL_EVENT_RECONNECT, TUNNEL_CONNECTING},
	    {TUNNEL_UP, TUNNEL_EVENT_FAIL, TUNNEL_BACKOFF},
	    {TUNNEL_UP, TUNNEL_EVENT_RECONNECT, TUNNEL_CONNECTING},
	    {TUNNEL_UP, TUNNEL_EVENT_TIMER, TUNNEL_UP}, /* a stray timer changes nothing */
	    {TUNNEL_UP, TUNNEL_EVENT_READY, TUNNEL_UP},
	    {TUNNEL_BACKOFF, TUNNEL_EVENT_TIMER, TUNNEL_CONNECTING},
	    {TUNNEL_BACKOFF, TUNNEL_EVENT_RECONNECT, TUNNEL_CONNECTING},
	    {TUNNEL_BACKOFF, TUNNEL_EVENT_READY, TUNNEL_BACKOFF},
	    {TUNNEL_BACKOFF, TUNNEL_EVENT_FAIL, TUNNEL_BACKOFF},
	};

	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
		if (tunnel_next_state(table[i].from, table[i].e) != table[i].to)
			fail_msg("%s + event %d -> %s, want %s", tunnel_state_str(table[i].from),
				 (int)table[i].e,
				 tunnel_state_str(tunnel_next_state(table[i].from, table[i].e)),
				 tunnel_state_str(table[i].to));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_transitions),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
