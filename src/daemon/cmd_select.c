#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "config.h"
#include "diag.h"

int tunnel_selection_load(const struct tunnel_selection *sel, const char *cmd, struct config **ret,
			  const struct tunnel_config ***ret_tunnels, size_t *ret_n)
{
	const struct tunnel_config **list;
	struct diag diags;
	struct config *c = NULL;
	size_t n;
	int r;

	diag_init(&diags);
	r = config_load(sel->config_path, &c, &diags);
	for (size_t i = 0; i < diags.count; i++)
		fprintf(stderr, "%s\n", diags.messages[i]);
	diag_finish(&diags);
	if (r < 0) {
		if (r != -EINVAL)
			fprintf(stderr, "moletun %s: %s: %s\n", cmd, sel->config_path,
				strerror(-r));
		return 2;
	}
	n = sel->n_names ? sel->n_names : c->n_tunnels;
	list = calloc(n ? n : 1, sizeof(*list));
	if (!list) {
		config_free(c);
		return 2;
	}
	for (size_t i = 0; i < n; i++) {
		list[i] = sel->n_names ? config_find_tunnel(c, sel->names[i]) : &c->tunnels[i];
		if (!list[i]) {
			fprintf(stderr, "moletun %s: no tunnel '%s' in %s\n", cmd, sel->names[i],
				sel->config_path);
			free(list);
			config_free(c);
			return 2;
		}
	}
	if (n == 0) {
		fprintf(stderr, "moletun %s: no tunnels in %s\n", cmd, sel->config_path);
		free(list);
		config_free(c);
		return 2;
	}
	*ret = c;
	*ret_tunnels = list;
	*ret_n = n;
	return 0;
}
