#include "reload_plan.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int reload_plan_build(const struct tunnel_config *const *old, size_t n_old,
		      const struct config *next, struct reload_plan *ret)
{
	struct reload_plan p = {.n_old = n_old, .n_next = next->n_tunnels};

	p.old = calloc(n_old ? n_old : 1, sizeof(*p.old));
	p.kept_from = calloc(p.n_next ? p.n_next : 1, sizeof(*p.kept_from));
	if (!p.old || !p.kept_from) {
		reload_plan_free(&p);
		return -ENOMEM;
	}
	for (size_t j = 0; j < p.n_next; j++)
		p.kept_from[j] = RELOAD_NONE;
	for (size_t i = 0; i < n_old; i++) {
		const struct tunnel_config *tc = config_find_tunnel(next, old[i]->name);

		if (!tc) {
			p.old[i].verdict = RELOAD_REMOVE;
			continue;
		}
		p.old[i].changed = tunnel_config_diff(old[i], tc, &p.old[i].contents);
		if (p.old[i].changed) {
			p.old[i].verdict = RELOAD_RESTART;
			continue;
		}
		p.old[i].verdict = RELOAD_KEEP;
		p.old[i].kept_as = (size_t)(tc - next->tunnels);
		p.kept_from[p.old[i].kept_as] = i;
	}
	*ret = p;
	return 0;
}

void reload_plan_free(struct reload_plan *p)
{
	free(p->old);
	free(p->kept_from);
	p->old = NULL;
	p->kept_from = NULL;
}
