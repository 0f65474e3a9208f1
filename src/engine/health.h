#pragma once
#include <stdbool.h>
#include <stddef.h>

#include "status.h"

/*
 * What "up" is worth: pure decisions on a tunnel's recent samples, no I/O. The engine
 * feeds round-trip samples (keepalive request to reply) and each forward's target
 * evidence (probes, clients' channel opens); status, STATUS= and alerts read the result.
 */

/* Round-trip time as TCP estimates it (RFC 6298): SRTT and RTTVAR, in seconds. */
struct rtt_estimator {
	bool measured; /* false until the first sample */
	double last;
	double srtt;
	double rttvar;
	/* The smallest sample: the path without queues, which a bulk stream on the same
	 * session fills (the window policy sizes windows by it, window.h). */
	double min;
};

void rtt_init(struct rtt_estimator *e);
void rtt_sample(struct rtt_estimator *e, double seconds);

/*
 * Leaving `degraded` takes a smoothed RTT below this share of degraded_rtt, so an RTT
 * hovering at the threshold does not flap the health (and its alerts) on every sample.
 */
#define HEALTH_RECOVER_SHARE 0.8

/*
 * The tunnel's health now. `previous` is the last health decided (for the degraded
 * hysteresis); degraded_rtt 0 disables `degraded`; target_down: some forward's target is
 * unreachable.
 */
enum tunnel_health health_decide(enum tunnel_health previous, enum tunnel_state state,
				 const struct rtt_estimator *rtt, double degraded_rtt,
				 bool target_down);
