#include "tunnel_state.h"

enum tunnel_state tunnel_next_state(enum tunnel_state s, enum tunnel_event e)
{
	switch (e) {
	case TUNNEL_EVENT_START:
	case TUNNEL_EVENT_RECONNECT:
		return TUNNEL_CONNECTING;
	case TUNNEL_EVENT_READY:
		return s == TUNNEL_CONNECTING ? TUNNEL_UP : s;
	case TUNNEL_EVENT_FAIL:
		return s == TUNNEL_BACKOFF ? s : TUNNEL_BACKOFF;
	case TUNNEL_EVENT_TIMER:
		if (s == TUNNEL_BACKOFF)
			return TUNNEL_CONNECTING;
		if (s == TUNNEL_CONNECTING)
			return TUNNEL_BACKOFF;
		return s;
	}
	return s;
}
