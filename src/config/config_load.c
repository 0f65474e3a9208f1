#include "config.h"

#include <errno.h>
#include <glob.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config_internal.h"
#include "config_table.h"

/*
 * The loader: its errors, the files it reads and includes, and the entry points. The
 * lines of each file are read by config_read.c, the result checked by config_check.c.
 */

#define INCLUDE_FILES_MAX 1024
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

/* Hands the diagnostics over sorted by file (in the order first read) and line. */
static void loader_flush_diags(struct loader *l, struct diag *out)
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

/* Returns the index of `path` in l->files, adding it if new, or -ENOMEM. */
static ssize_t loader_intern_file(struct loader *l, const char *path)
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

char *loader_dir_of(const char *path)
{
	char *copy = strdup(path), *dir;

	if (!copy)
		return NULL;
	dir = strdup(dirname(copy));
	free(copy);
	return dir;
}

/* A file that cannot be read: reported at the include naming it, or at the file itself. */
static void file_error(struct loader *l, const struct where *from, size_t file, const char *path,
		       const char *why)
{
	if (from)
		loader_error(l, *from, "include file %s: %s", path, why);
	else
		loader_error(l, (struct where){.file = file}, "%s", why);
}

/* Reads `path` (an include when `from` is set: errors are reported there). */
static int load_file(struct loader *l, const char *path, size_t depth, const struct where *from)
{
	struct file_parse fp = {.loader = l, .depth = depth};
	struct stat st;
	ssize_t file;
	int r;

	if (depth > INCLUDE_DEPTH_MAX) {
		loader_error(l, *from, "includes nested too deeply (max %d)", INCLUDE_DEPTH_MAX);
		return -ELOOP;
	}
	if (from && ++l->files_read > INCLUDE_FILES_MAX) {
		loader_error(l, *from, "too many include files (max %d)", INCLUDE_FILES_MAX);
		return -E2BIG;
	}
	file = loader_intern_file(l, path);
	if (file < 0)
		return (int)file;
	fp.file = (size_t)file;
	fp.f = fopen(path, "re");
	if (!fp.f) {
		r = -errno;
		file_error(l, from, fp.file, path, strerror(-r));
		return r;
	}
	r = 0;
	if (fstat(fileno(fp.f), &st) < 0) {
		r = -errno;
		file_error(l, from, fp.file, path, strerror(-r));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		r = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
		file_error(l, from, fp.file, path, "not a regular file");
		goto out;
	}
	for (size_t i = 0; i < l->depth; i++) {
		if (l->open_files[i].dev == st.st_dev && l->open_files[i].ino == st.st_ino) {
			loader_error(l, *from, "include cycle: %s is already being read", path);
			r = -ELOOP;
			goto out;
		}
	}
	l->open_files[l->depth].dev = st.st_dev;
	l->open_files[l->depth].ino = st.st_ino;
	l->depth++;
	r = loader_parse(l, &fp, path);
	l->depth--;
out:
	fclose(fp.f);
	return r;
}

static int path_compare(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

void loader_include(struct file_parse *fp, const char *pattern)
{
	struct loader *l = fp->loader;
	struct where at = {.file = fp->file, .line = fp->line};
	char *full = NULL;
	glob_t g;
	int r;

	if (pattern[0] == '~') {
		loader_error(l, at, "files: '~' is not expanded, use an absolute path");
		return;
	}
	if (pattern[0] == '/')
		full = strdup(pattern);
	else if (asprintf(&full, "%s/%s", fp->dir, pattern) < 0)
		full = NULL;
	if (!full) {
		l->out_of_memory = true;
		return;
	}
	memset(&g, 0, sizeof(g));
	r = glob(full, GLOB_NOSORT, NULL, &g);
	if (r == GLOB_NOMATCH && !strpbrk(pattern, "*?[")) {
		struct stat st;

		if (stat(full, &st) < 0)
			loader_error(l, at, "include file %s: %s", full, strerror(errno));
		else
			loader_error(l, at, "include file %s: cannot be read", full);
	} else if (r == GLOB_NOSPACE) {
		l->out_of_memory = true;
	} else if (r == GLOB_ABORTED) {
		loader_error(l, at, "include %s: cannot read directory", full);
	} else if (r == 0) {
		qsort(g.gl_pathv, g.gl_pathc, sizeof(char *), path_compare);
		for (size_t i = 0; i < g.gl_pathc && !loader_stopped(l); i++)
			load_file(l, g.gl_pathv[i], fp->depth + 1, &at);
	}
	globfree(&g);
	free(full);
}

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
		r = load_file(&l, path, 0, NULL);
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

const struct tunnel_config *config_find_tunnel(const struct config *c, const char *name)
{
	for (size_t i = 0; i < c->n_tunnels; i++)
		if (strcmp(c->tunnels[i].name, name) == 0)
			return &c->tunnels[i];
	return NULL;
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
