#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "config.h"
#include "diag.h"

int command_usage_error(const struct command_line *cl, const char *what, const char *arg)
{
	fprintf(stderr, "moletun %s: %s '%s'\n%s", cl->cmd, what, arg, cl->help);
	return 2;
}

int tunnel_selection_parse(int argc, char **argv, const struct command_line *cl,
			   struct tunnel_selection *sel)
{
	int opt, r;

	sel->config_path = CONFIG_DEFAULT_PATH;
	optind = 1;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "c:h", cl->longopts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			sel->config_path = optarg;
			break;
		case 'h':
			fputs(cl->help, stdout);
			return -1;
		case '?':
			return command_usage_error(cl, "bad option", argv[optind - 1]);
		default:
			r = cl->option(cl, opt, optarg);
			if (r)
				return r;
			break;
		}
	}
	for (; optind < argc; optind++) {
		if (sel->n_names == COMMAND_TUNNELS_MAX)
			return command_usage_error(cl, "too many tunnels at", argv[optind]);
		sel->names[sel->n_names++] = argv[optind];
	}
	return 0;
}

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
