#include "backoff.h"

/* xorshift64*: small, fast, and deterministic for a given seed (tests rely on that). */
static uint64_t rng_next(struct backoff *b)
{
	uint64_t x = b->rng;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	b->rng = x;
	return x * 0x2545F4914F6CDD1DULL;
}

void backoff_init(struct backoff *b, uint64_t initial_ms, uint64_t max_ms, uint64_t seed)
{
	b->initial_ms = initial_ms;
	b->max_ms = max_ms < initial_ms ? initial_ms : max_ms;
	b->current_ms = 0;
	b->refusals = 0;
	b->rng = seed ? seed : 0x9E3779B97F4A7C15ULL;
}

uint64_t backoff_jitter(struct backoff *b, uint64_t delay_ms)
{
	uint64_t half = delay_ms / 2;

	if (delay_ms == 0)
		return 0;
	return delay_ms - half + rng_next(b) % (half + 1);
}

uint64_t backoff_pace(struct backoff *b, uint64_t delay_ms)
{
	return delay_ms + rng_next(b) % (delay_ms / 10 + 1);
}

uint64_t backoff_next(struct backoff *b)
{
	if (b->current_ms == 0)
		b->current_ms = b->initial_ms;
	else if (b->current_ms >= b->max_ms / 2)
		b->current_ms = b->max_ms;
	else
		b->current_ms *= 2;
	if (b->current_ms > b->max_ms)
		b->current_ms = b->max_ms;
	return backoff_jitter(b, b->current_ms);
}

void backoff_reset(struct backoff *b)
{
	b->current_ms = 0;
	b->refusals = 0;
}

uint64_t backoff_after_failure(struct backoff *b, enum backoff_cause cause, double up_for,
			       double stable_after, uint64_t auth_retry_ms)
{
	if (up_for >= stable_after)
		backoff_reset(b);
	if (cause != BACKOFF_REFUSED)
		b->refusals = 0;
	switch (cause) {
	case BACKOFF_HUMAN:
		return backoff_pace(b, auth_retry_ms);
	case BACKOFF_REFUSED:
		if (b->refusals < BACKOFF_REFUSED_MAX) {
			b->refusals++;
			return backoff_pace(b, b->max_ms < BACKOFF_REFUSED_MS ? b->max_ms
									      : BACKOFF_REFUSED_MS);
		}
		return backoff_next(b);
	case BACKOFF_NETWORK:
		break;
	}
	return backoff_next(b);
}
