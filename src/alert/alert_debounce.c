#include "alert_debounce.h"

void alert_debounce_init(struct alert_debounce *d, const struct alert_policy *p, bool up,
			 double now)
{
	d->down = !up;
	d->fired = false;
	d->down_since = now;
	d->due = up ? 0 : now + p->down_after;
}

static enum alert_action debounce_fire(struct alert_debounce *d, const struct alert_policy *p,
				       double now)
{
	d->fired = true;
	d->due = p->resend > 0 ? now + p->resend : 0;
	return ALERT_ACTION_DOWN;
}

enum alert_action alert_debounce_update(struct alert_debounce *d, const struct alert_policy *p,
					bool up, bool needs_human, double now)
{
	if (up) {
		bool fired = d->fired;

		if (!d->down)
			return ALERT_ACTION_NONE;
		d->down = false;
		d->fired = false;
		d->due = 0;
		return fired && p->send_resolved ? ALERT_ACTION_UP : ALERT_ACTION_NONE;
	}
	if (!d->down) {
		d->down = true;
		d->fired = false;
		d->down_since = now;
		d->due = now + p->down_after;
	}
	if (!d->fired && (needs_human || now >= d->due))
		return debounce_fire(d, p, now);
	return ALERT_ACTION_NONE;
}

enum alert_action alert_debounce_expire(struct alert_debounce *d, const struct alert_policy *p,
					double now)
{
	if (!d->down || d->due == 0 || now < d->due)
		return ALERT_ACTION_NONE;
	if (!d->fired)
		return debounce_fire(d, p, now);
	if (p->resend <= 0) {
		d->due = 0;
		return ALERT_ACTION_NONE;
	}
	d->due = now + p->resend;
	return ALERT_ACTION_RESEND;
}

void alert_debounce_set_policy(struct alert_debounce *d, const struct alert_policy *p, double now)
{
	if (!d->down)
		d->due = 0;
	else if (!d->fired)
		d->due = d->down_since + p->down_after;
	else
		d->due = p->resend > 0 ? now + p->resend : 0;
}
