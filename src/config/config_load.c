#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "config_internal.h"
#include "config_table.h"

/*
 * The loader's entry points: a file or a buffer read by config_read.c, the result checked
 * by config_check.c, the diagnostics handed over sorted; and comparing tunnels.
 */

static void loader_finish(struct loader *l)
{
	for (size_t i = 0; i < l->n_files; i++)
		free(l->files[i]);
	free(l->files);
	for (size_t i = 0; i < l->n_diags; i++)
		free(l->diags[i].text);
	free(l->diags);
	if (l->config) {
		for (size_t i = 0; i < l->config->n_tunnels; i++)
			section_state_finish(&l->tunnel_states[i]);
		for (size_t i = 0; i < l->config->n_alerts; i++)
			section_state_finish(&l->alert_states[i]);
	}
	free(l->tunnel_states);
	free(l->alert_states);
	tunnel_config_finish(&l->scratch_tunnel);
	alert_config_finish(&l->scratch_alert);
	section_state_finish(&l->scratch_state);
	section_state_finish(&l->moletun_state);
	section_state_finish(&l->include_state);
	if (!l->keep_config)
		config_free(l->config);
}

/* config_load() of `path`, or of `len` bytes at `text` named `path` when text is set. */
static int load(const char *path, const char *text, size_t len, bool allow_includes,
		config_key_verifier verify_key, struct config **ret, struct diag *diags)
{
	struct loader l;
	int r;

	memset(&l, 0, sizeof(l));
	l.no_includes = !allow_includes;
	l.verify_key = verify_key;
	l.config = calloc(1, sizeof(*l.config));
	if (!l.config || !(l.config->path = strdup(path)) ||
	    config_section_defaults(CONFIG_SECTION_MOLETUN, l.config) < 0 ||
	    loader_intern_file(&l, path) < 0) {
		loader_finish(&l);
		return -ENOMEM;
	}
	if (text) {
		struct file_parse fp = {.loader = &l, .mem = text, .mem_left = len};

		r = loader_parse(&l, &fp, path);
	} else {
		r = loader_read_file(&l, path, 0, NULL);
	}
	if (r == 0 && !loader_stopped(&l))
		loader_validate(&l);
	loader_flush_diags(&l, diags);
	if (r == 0 && l.out_of_memory)
		r = -ENOMEM;
	else if (r == 0 && l.errors > 0)
		r = -EINVAL;
	if (r == 0) {
		*ret = l.config;
		l.keep_config = true;
	}
	loader_finish(&l);
	return r;
}

int config_load(const char *path, struct config **ret, struct diag *diags)
{
	return load(path, NULL, 0, true, NULL, ret, diags);
}

int config_load_verified(const char *path, config_key_verifier verify_key, struct config **ret,
			 struct diag *diags)
{
	return load(path, NULL, 0, true, verify_key, ret, diags);
}

int config_load_buffer(const char *name, const char *text, size_t len, bool allow_includes,
		       struct config **ret, struct diag *diags)
{
	return load(name, text ? text : "", len, allow_includes, NULL, ret, diags);
}

const char *tunnel_config_diff(const struct tunnel_config *a, const struct tunnel_config *b,
			       bool *ret_contents)
{
	const struct config_section_info *info = &config_sections[CONFIG_SECTION_TUNNEL];

	*ret_contents = false;
	if (strcmp(a->name, b->name) != 0)
		return "name";
	for (size_t k = 0; k < info->n_keys; k++) {
		const struct config_key *key = &info->keys[k];

		if (!config_key_equal(key, a, b))
			return key->name;
		if (!config_key_contents_equal(key, a, b)) {
			*ret_contents = true;
			return key->name;
		}
	}
	return NULL;
}

bool tunnel_config_equal(const struct tunnel_config *a, const struct tunnel_config *b)
{
	bool contents;

	return tunnel_config_diff(a, b, &contents) == NULL;
}
