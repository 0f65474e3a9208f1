#pragma once
#include <stdbool.h>
#include <stddef.h>

/*
 * Byte accounting for one SSH session's allocations, with a cap. Each block carries its
 * size in a small header in front of it, so frees and reallocs know what they return, and
 * sits on a list, so what libssh2 forgets to free (1.10 leaks kex state when a session is
 * freed during its key exchange) can be released with the session.
 * The count is of the bytes asked for plus the header, not of what malloc rounds up to; it
 * is added to the daemon-wide memory account (memacct.h) as well.
 */
struct sessmem_block;

struct sessmem {
	struct sessmem_block *blocks; /* every block not freed yet */
	size_t used;
	size_t peak;
	size_t cap;	    /* 0: no cap */
	size_t refused;	    /* size of the first request refused over the cap, 0 if none */
	unsigned n_refused; /* requests refused over the cap */
};

void sessmem_init(struct sessmem *m, size_t cap);
/* NULL when `size` would take `used` over `cap` (recorded in refused) or malloc fails. */
void *sessmem_alloc(struct sessmem *m, size_t size);
/* realloc() under the cap; NULL leaves `p` intact. NULL `p` allocates. */
void *sessmem_realloc(struct sessmem *m, void *p, size_t size);
/* Accepts NULL. */
void sessmem_free(struct sessmem *m, void *p);
/* Frees (wiped) every block still allocated; returns how many there were. */
size_t sessmem_release_all(struct sessmem *m);
/* True once a request was refused over the cap. */
static inline bool sessmem_over_cap(const struct sessmem *m)
{
	return m->n_refused > 0;
}
