#pragma once
#include <stdbool.h>
#include <stdint.h>

/*
 * Jittered exponential backoff: each delay is drawn from [d/2, d] where d starts at
 * `initial` and doubles up to `max`, so no wait ever exceeds `max` ("equal jitter": the
 * spread keeps many nodes from reconnecting in lockstep, the floor keeps retries paced).
 */
struct backoff {
	uint64_t initial_ms;
	uint64_t max_ms;
	uint64_t current_ms;
	uint64_t rng;
};

void backoff_init(struct backoff *b, uint64_t initial_ms, uint64_t max_ms, uint64_t seed);
/* Returns the next delay and advances the sequence. */
uint64_t backoff_next(struct backoff *b);
/* A fixed pace for failures that need a human (auth, host key): never sooner than
 * delay_ms, up to 10% later, so a fleet does not retry in lockstep. */
uint64_t backoff_pace(struct backoff *b, uint64_t delay_ms);
/* A draw from [delay_ms/2, delay_ms]. */
uint64_t backoff_jitter(struct backoff *b, uint64_t delay_ms);
void backoff_reset(struct backoff *b);
/*
 * The wait after a failure: auth and host-key failures (needs_human) at the slow pace of
 * auth_retry_ms, network ones on the curve. A session that had been up for at least
 * stable_after seconds (up_for; negative when it never came up) starts the curve over, so
 * one outage after days of uptime retries fast again.
 */
uint64_t backoff_after_failure(struct backoff *b, bool needs_human, double up_for,
			       double stable_after, uint64_t auth_retry_ms);
