#include "health.h"

void rtt_init(struct rtt_estimator *e)
{
	*e = (struct rtt_estimator){0};
}

/* RFC 6298 2.2 and 2.3: alpha 1/8, beta 1/4. */
void rtt_sample(struct rtt_estimator *e, double seconds)
{
	double deviation;

	if (seconds < 0)
		seconds = 0;
	e->last = seconds;
	if (!e->measured || seconds < e->min)
		e->min = seconds;
	if (!e->measured) {
		e->measured = true;
		e->srtt = seconds;
		e->rttvar = seconds / 2;
		return;
	}
	deviation = e->srtt > seconds ? e->srtt - seconds : seconds - e->srtt;
	e->rttvar = 0.75 * e->rttvar + 0.25 * deviation;
	e->srtt = 0.875 * e->srtt + 0.125 * seconds;
}

static bool rtt_degraded(enum tunnel_health previous, const struct rtt_estimator *rtt,
			 double degraded_rtt)
{
	if (degraded_rtt <= 0 || !rtt || !rtt->measured)
		return false;
	if (previous == HEALTH_DEGRADED)
		return rtt->srtt >= degraded_rtt * HEALTH_RECOVER_SHARE;
	return rtt->srtt > degraded_rtt;
}

enum tunnel_health health_decide(enum tunnel_health previous, enum tunnel_state state,
				 const struct rtt_estimator *rtt, double degraded_rtt,
				 bool target_down)
{
	if (state != TUNNEL_UP)
		return HEALTH_DOWN;
	if (target_down)
		return HEALTH_TARGET_DOWN;
	/* Coming back from target_down or down, degraded is judged afresh. */
	if (rtt_degraded(previous, rtt, degraded_rtt))
		return HEALTH_DEGRADED;
	return HEALTH_OK;
}
