#include "liveness.h"

double liveness_probe_after(double interval, unsigned count_max)
{
	double dead_after = interval * count_max;

	return dead_after - interval / 2 < interval ? interval / 2 : interval;
}

/* The answered kind is the one to send: the server answers it and nothing holds it back. */
static bool answered_kind(const struct liveness_input *in)
{
	return in->answers && !in->blocked;
}

enum liveness_verdict liveness_check(const struct liveness_input *in)
{
	double dead_after = in->interval * in->count_max;
	double probe_after = liveness_probe_after(in->interval, in->count_max);
	double idle = in->now - in->last_rx;

	if (idle >= dead_after)
		return LIVENESS_DEAD_SILENT;
	/* A server that keeps sending but stopped reading passes the test above; it does
	 * not answer keepalives, and what we send for it waits. */
	if (in->answers && in->pending && in->now - in->keepalive_sent >= dead_after)
		return LIVENESS_DEAD_UNANSWERED;
	if (in->out_len > 0 && in->now - in->last_tx >= dead_after)
		return LIVENESS_DEAD_NOT_TAKEN;
	/* "none yet" is tested as such: on the monotonic clock `now` may be only seconds */
	if (answered_kind(in)) {
		if (!in->pending &&
		    (in->keepalive_sent == 0 || in->now - in->keepalive_sent >= probe_after))
			return LIVENESS_SEND;
		return LIVENESS_OK;
	}
	/* an unanswered keepalive only makes the server send something: needed after silence */
	if (idle >= probe_after &&
	    (in->global_sent == 0 || in->now - in->global_sent >= probe_after))
		return LIVENESS_SEND_GLOBAL;
	return LIVENESS_OK;
}

double liveness_next_check(const struct liveness_input *in)
{
	double dead_after = in->interval * in->count_max;
	double probe_after = liveness_probe_after(in->interval, in->count_max);
	double due;

	if (answered_kind(in))
		due = in->keepalive_sent + probe_after;
	else
		due = (in->last_rx > in->global_sent ? in->last_rx : in->global_sent) + probe_after;
	if (due <= in->now) /* an answer is awaited past its time, or one is held: look soon */
		due = in->now + probe_after / 2;
	if (due > in->last_rx + dead_after)
		due = in->last_rx + dead_after;
	if (in->answers && in->pending && due > in->keepalive_sent + dead_after)
		due = in->keepalive_sent + dead_after;
	if (in->out_len > 0 && due > in->last_tx + dead_after)
		due = in->last_tx + dead_after;
	return due;
}
