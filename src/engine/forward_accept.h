#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conn.h"

/*
 * Clients coming in (private to the forward layer): local listeners' accept batches,
 * admission against the memory account, the start_hold and down_hold holds and the wait
 * for room in the account.
 */

/* Makes a listener's watchers: clients accepted in batches, paused when out of
 * descriptors. */
void listener_watch(struct listener *li);
/* A client's (or a remote forward target's) events: its bytes to and from the channel,
 * and the end of its hold. */
void conn_watch(struct conn *c);
/* Counts a client the forward closed without serving it. */
void forward_count_rejected(struct forwarder *fw, size_t forward, enum reject_reason why);
/* Whether the memory account has room for `cost` more bytes held for a client of
 * `forward`. */
bool forward_admit(const struct forwarder *fw, size_t forward, uint64_t cost);
/* Queues a held client for its channel's open if the account has room for its first
 * window; false (and nothing changed) if not. Nothing is reserved yet. */
bool conn_admit_open(struct conn *c);
/* At the head of the open queue, before its open is sent: reserves the client's first
 * window, or, without room for it now, takes it out of the queue to wait for room
 * (false). True for probes and for a client whose open is already in flight. */
bool conn_reserve_open(struct conn *c);
/* Holds a client until the account has room for its window, up to a few seconds. */
void conn_memory_wait(struct conn *c);
