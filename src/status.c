#include "status.h"

#include <stdlib.h>

static const char *const tunnel_state_names[] = {
    [TUNNEL_CONNECTING] = "connecting",
    [TUNNEL_UP] = "up",
    [TUNNEL_BACKOFF] = "backoff",
};

const char *tunnel_state_str(enum tunnel_state s)
{
	if ((unsigned)s >= sizeof(tunnel_state_names) / sizeof(tunnel_state_names[0]))
		return "unknown";
	return tunnel_state_names[s];
}

void status_free(struct status *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->n_tunnels; i++)
		free(s->tunnels[i].forwards);
	free(s->tunnels);
	s->tunnels = NULL;
	s->n_tunnels = 0;
	free(s->alerts);
	s->alerts = NULL;
	s->n_alerts = 0;
}
