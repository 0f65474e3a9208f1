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
	unsigned refusals; /* quick retries after refused connects, in a row */
	uint64_t rng;
};

/* What a failure was, which decides the wait after it. */
enum backoff_cause {
	BACKOFF_NETWORK, /* timeouts, resets, handshake errors: the curve */
	BACKOFF_REFUSED, /* the connect was refused or had no route: the quick pace */
	BACKOFF_HUMAN,	 /* authentication or host key: auth_retry_interval */
};

/* A refused connect is answered at once and costs the server nothing, so it is retried on a
 * short fixed pace instead of the curve (at most 10 a second); after this many in a row the
 * server is not restarting but down, and the curve takes over. */
#define BACKOFF_REFUSED_MS  100
#define BACKOFF_REFUSED_MAX 600

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
 * The wait after a failure: auth and host-key failures at the slow pace of auth_retry_ms;
 * refused connects at the pace of BACKOFF_REFUSED_MS (never above max) for up to
 * BACKOFF_REFUSED_MAX in a row, then on the curve; other network failures on the curve
 * (they end a run of refusals). A session that had been up for at least stable_after
 * seconds (up_for; negative when it never came up) starts the curve over, so one outage
 * after days of uptime retries fast again.
 */
uint64_t backoff_after_failure(struct backoff *b, enum backoff_cause cause, double up_for,
			       double stable_after, uint64_t auth_retry_ms);
