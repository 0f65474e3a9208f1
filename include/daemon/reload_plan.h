#pragma once
#include <stdbool.h>
#include <stddef.h>

#include "config.h"

/*
 * What a reload does to each tunnel, decided from the running and the new configuration
 * alone (pure: no tunnel, no I/O), so that the daemon's reload is the plan carried out and
 * the decisions are tested on their own.
 *
 * A running tunnel whose section is in the new configuration with no key (and no file's
 * contents) changed is kept, with its session and clients; one whose section changed is
 * restarted; one whose section is gone is removed. A section of the new configuration is
 * either kept from a running tunnel or started.
 */
enum reload_verdict {
	RELOAD_KEEP,
	RELOAD_RESTART,
	RELOAD_REMOVE,
};

/* Where no running tunnel is kept for a new section (it starts). */
#define RELOAD_NONE ((size_t)-1)

struct reload_old {
	enum reload_verdict verdict;
	size_t kept_as;	     /* RELOAD_KEEP: the index of its section in the new config */
	const char *changed; /* RELOAD_RESTART: the first key that differs ("port") */
	bool contents;	     /* ... and only the contents of the file it names */
};

struct reload_plan {
	struct reload_old *old; /* one per running tunnel, in their order */
	size_t n_old;
	size_t *kept_from; /* one per new section: the running tunnel kept, or RELOAD_NONE */
	size_t n_next;
};

/*
 * Plans the reload from the running tunnels' sections `old` (n_old of them) to `next`.
 * Returns 0 or -ENOMEM (*ret untouched). Free with reload_plan_free().
 */
int reload_plan_build(const struct tunnel_config *const *old, size_t n_old,
		      const struct config *next, struct reload_plan *ret);
void reload_plan_free(struct reload_plan *p);
