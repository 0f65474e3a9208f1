#include "config.h"

#include <errno.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_internal.h"
#include "config_table.h"

/*
 * What every part of the loader uses: its errors and the files they name, the sections'
 * bookkeeping, and freeing what a configuration owns. Reading is config_read.c's, the
 * checks config_check.c's, the entry points config_load.c's.
 */

/* A binary or runaway file should not print a million lines. */
#define ERRORS_MAX 200

void loader_error(struct loader *l, struct where at, const char *fmt, ...)
{
	struct pending_diag *grown;
	char *text;
	va_list ap;
	int r;

	l->errors++;
	if (l->errors > ERRORS_MAX)
		return;
	va_start(ap, fmt);
	r = vasprintf(&text, fmt, ap);
	va_end(ap);
	if (r < 0) {
		l->out_of_memory = true;
		return;
	}
	grown = array_grow(l->diags, l->n_diags, sizeof(*grown));
	if (!grown) {
		free(text);
		l->out_of_memory = true;
		return;
	}
	l->diags = grown;
	l->diags[l->n_diags] = (struct pending_diag){.at = at, .seq = l->n_diags, .text = text};
	l->n_diags++;
}

static int pending_diag_compare(const void *a, const void *b)
{
	const struct pending_diag *x = a, *y = b;

	if (x->at.file != y->at.file)
		return x->at.file < y->at.file ? -1 : 1;
	if (x->at.line != y->at.line)
		return x->at.line < y->at.line ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

void loader_flush_diags(struct loader *l, struct diag *out)
{
	if (l->n_diags > 0)
		qsort(l->diags, l->n_diags, sizeof(*l->diags), pending_diag_compare);
	for (size_t i = 0; i < l->n_diags; i++)
		diag_add(out, l->files[l->diags[i].at.file], l->diags[i].at.line, "%s",
			 l->diags[i].text);
	if (l->errors > ERRORS_MAX)
		diag_add(out, l->files[0], 0, "too many errors, %zu more not shown",
			 l->errors - ERRORS_MAX);
	if (l->out_of_memory)
		diag_add(out, l->files[0], 0, "out of memory");
}

bool loader_stopped(const struct loader *l)
{
	return l->errors > ERRORS_MAX || l->out_of_memory;
}

ssize_t loader_intern_file(struct loader *l, const char *path)
{
	char **grown, *copy;

	for (size_t i = 0; i < l->n_files; i++)
		if (strcmp(l->files[i], path) == 0)
			return (ssize_t)i;
	copy = strdup(path);
	grown = copy ? array_grow(l->files, l->n_files, sizeof(*grown)) : NULL;
	if (!grown) {
		free(copy);
		l->out_of_memory = true;
		return -ENOMEM;
	}
	l->files = grown;
	l->files[l->n_files] = copy;
	return (ssize_t)l->n_files++;
}

char *loader_dir_of(const char *path)
{
	char *copy = strdup(path), *dir;

	if (!copy)
		return NULL;
	dir = strdup(dirname(copy));
	free(copy);
	return dir;
}

bool section_key_given(const struct section_state *s, enum config_section section, const char *name)
{
	const struct config_key *k = config_key_find(section, name);

	return s->key_at[config_key_index(section, k)].line != 0;
}

bool section_key_bad(const struct section_state *s, enum config_section section, const char *name)
{
	const struct config_key *k = config_key_find(section, name);

	return s->key_bad[config_key_index(section, k)];
}

struct where section_key_where(const struct section_state *s, enum config_section section,
			       const char *name)
{
	const struct config_key *k = config_key_find(section, name);
	struct where at = s->key_at[config_key_index(section, k)];

	return at.line ? at : s->at;
}

void section_state_finish(struct section_state *s)
{
	free(s->items);
	memset(s, 0, sizeof(*s));
}

void tunnel_config_finish(struct tunnel_config *t)
{
	config_section_free(CONFIG_SECTION_TUNNEL, t);
	free(t->name);
	free(t->file);
	memset(t, 0, sizeof(*t));
}

void alert_config_finish(struct alert_config *a)
{
	config_section_free(CONFIG_SECTION_ALERT, a);
	free(a->name);
	free(a->file);
	memset(a, 0, sizeof(*a));
}

void config_free(struct config *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n_tunnels; i++)
		tunnel_config_finish(&c->tunnels[i]);
	free(c->tunnels);
	for (size_t i = 0; i < c->n_alerts; i++)
		alert_config_finish(&c->alerts[i]);
	free(c->alerts);
	config_section_free(CONFIG_SECTION_MOLETUN, c);
	free(c->path);
	free(c);
}

const struct tunnel_config *config_find_tunnel(const struct config *c, const char *name)
{
	for (size_t i = 0; i < c->n_tunnels; i++)
		if (strcmp(c->tunnels[i].name, name) == 0)
			return &c->tunnels[i];
	return NULL;
}
