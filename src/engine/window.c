#include "window.h"

static uint64_t budget_limit = 64ull << 20;
static uint64_t budget_used;

static uint64_t halved(uint64_t window, uint64_t base)
{
	return window / 2 > base ? window / 2 : base;
}

uint64_t window_next(const struct window_input *in)
{
	uint64_t cur = in->window, grown;
	bool socket_backlog = in->client_queued > WINDOW_CLIENT_BACKLOG;
	double rtt = in->rtt > 0 && in->rtt < WINDOW_RTT_MIN ? WINDOW_RTT_MIN : in->rtt;

	if (in->max <= in->base)
		return in->base;
	if (cur < in->base)
		cur = in->base;
	if (cur > in->max)
		cur = in->max;
	if (rtt <= 0)
		return in->backlog ? halved(cur, in->base) : cur;
	if (in->elapsed > WINDOW_SLOW_RTTS * rtt)
		return halved(cur, in->base);
	if (in->consumed < cur)
		return cur;
	if (in->elapsed > WINDOW_LIMITED_RTTS * rtt)
		return in->backlog ? halved(cur, in->base) : cur;
	if (in->backlog || socket_backlog || in->memory_tight)
		return cur;
	grown = cur * 2 < in->max ? cur * 2 : in->max;
	if (grown - cur > in->budget_left)
		grown = cur + in->budget_left;
	return grown;
}

void window_budget_set_limit(uint64_t limit)
{
	budget_limit = limit;
}

uint64_t window_budget_limit(void)
{
	return budget_limit;
}

uint64_t window_budget_used(void)
{
	return budget_used;
}

uint64_t window_budget_left(void)
{
	return budget_used < budget_limit ? budget_limit - budget_used : 0;
}

void window_budget_charge(uint64_t *charge, uint64_t charge_now)
{
	budget_used -= *charge;
	budget_used += charge_now;
	*charge = charge_now;
}
