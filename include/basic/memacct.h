#pragma once
#include <stdbool.h>
#include <stdint.h>

/*
 * The daemon-wide memory account: what clients and servers can make moletun hold, counted
 * in one place against one limit ([moletun] memory_limit). Module-level counters: one
 * event loop, no locking. What it counts, by kind:
 *   session  libssh2's memory of every SSH session (sessmem.c): the data servers sent that
 *            clients have not taken yet, and whatever else libssh2 keeps;
 *   window   receive window granted on channels that the server has not used yet (data
 *            that may still arrive), or reserved for a channel whose open is queued;
 *   buffer   bytes moletun keeps for clients: a read the client's socket did not take, a
 *            client's bytes the channel's window did not take;
 *   socket   the kernel's queues of client sockets, at their bounds: the send queue a client
 *            that stops reading can fill, and the receive queue of a client moletun stopped
 *            reading (conn.h states the bounds, the forward layer sets them).
 *
 * Over fractions of the limit moletun sheds, in this order (memacct_stage_of):
 *   1/2  windows stop growing;
 *   3/4  the fattest channels (windows above the base) are granted nothing more, so their
 *        windows close and their servers stop sending; new channels open with a small
 *        window;
 *   7/8  new clients are refused (reason "memory") on a forward that holds more than
 *        MEMACCT_FORWARD_SHARE of the limit; past the limit every new client is.
 */

enum memacct_kind {
	MEMACCT_SESSION,
	MEMACCT_WINDOW,
	MEMACCT_BUFFER,
	MEMACCT_SOCKET,
	MEMACCT_KINDS,
};

enum memacct_stage {
	MEMACCT_OK,
	MEMACCT_NO_GROWTH,  /* windows stop growing */
	MEMACCT_SHED,	    /* the fattest channels' windows close; new ones open small */
	MEMACCT_REFUSE_FAT, /* new clients of forwards holding much are refused */
	MEMACCT_FULL,	    /* at the limit: every new client is refused */
};

/* A forward holding more than this part of the limit is refused new clients first. */
#define MEMACCT_FORWARD_SHARE_DIV 8

/* "session", "window", "buffer", "socket": stable names for JSON and metrics. */
const char *memacct_kind_str(enum memacct_kind k);
/* "ok", "no_growth", "shed", "refuse_fat", "full": stable names for JSON, metrics, logs. */
const char *memacct_stage_str(enum memacct_stage s);

/* The stage an account with `used` bytes of `limit` is in (pure). */
enum memacct_stage memacct_stage_of(uint64_t used, uint64_t limit);
/* Whether a new client of a forward that holds `forward_held` may come in at a cost of
 * `cost` bytes (pure). */
bool memacct_admit(uint64_t used, uint64_t limit, uint64_t forward_held, uint64_t cost);

void memacct_set_limit(uint64_t limit);
uint64_t memacct_limit(void);
void memacct_add(enum memacct_kind kind, uint64_t bytes);
void memacct_sub(enum memacct_kind kind, uint64_t bytes);
/* Moves one holder's share of `kind` from *share to `now`. */
void memacct_charge(enum memacct_kind kind, uint64_t *share, uint64_t now);
uint64_t memacct_used(void);
uint64_t memacct_used_kind(enum memacct_kind kind);
/* The most the account held since the daemon started. */
uint64_t memacct_peak(void);
enum memacct_stage memacct_stage(void);
