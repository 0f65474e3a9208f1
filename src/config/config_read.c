#include "config.h"

#include <errno.h>
#include <glob.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config_internal.h"
#include "config_table.h"
#include "strutil.h"

/*
 * The files: each opened once (an include cycle is an error), its lines read with inih's
 * reader, the section headers (kept, checked and thrown away, or ignored) and each
 * key = value set through the key table; an [include] reads its files there.
 */

#define TUNNELS_MAX	  1024
#define ALERTS_MAX	  64
#define INCLUDE_FILES_MAX 1024

static struct where here(const struct file_parse *fp)
{
	return (struct where){.file = fp->file, .line = fp->line};
}

/* The object and bookkeeping of the section being read, or NULL for [include]. */
static void *current_object(struct file_parse *fp, struct section_state **ret_state)
{
	struct loader *l = fp->loader;
	bool scratch = fp->mode == SECTION_SCRATCH;

	switch (fp->section) {
	case CONFIG_SECTION_MOLETUN:
		*ret_state = &l->moletun_state;
		return l->config;
	case CONFIG_SECTION_TUNNEL:
		*ret_state = scratch ? &l->scratch_state : &l->tunnel_states[fp->index];
		return scratch ? &l->scratch_tunnel : (void *)&l->config->tunnels[fp->index];
	case CONFIG_SECTION_ALERT:
		*ret_state = scratch ? &l->scratch_state : &l->alert_states[fp->index];
		return scratch ? &l->scratch_alert : (void *)&l->config->alerts[fp->index];
	default:
		*ret_state = &l->include_state;
		return NULL;
	}
}

/*
 * Room for one more section of `size` bytes after the `n` in `array`, and for its
 * bookkeeping in *states: the grown array, or NULL when out of memory (what grew stays).
 */
static void *sections_grow(void *array, size_t n, size_t size, struct section_state **states)
{
	struct section_state *grown = array_grow(*states, n, sizeof(*grown));

	if (!grown)
		return NULL;
	*states = grown;
	return array_grow(array, n, size);
}

/* Fills in what every kept named section has, then its defaults. */
static int section_fill(struct file_parse *fp, const char *name, void *object, char **name_field,
			char **file_field, unsigned *line_field, struct section_state *state)
{
	int r;

	memset(state, 0, sizeof(*state));
	state->at = here(fp);
	*line_field = fp->line;
	*name_field = strdup(name);
	*file_field = strdup(loader_file(fp->loader, state->at));
	if (!*name_field || !*file_field)
		return -ENOMEM;
	r = config_section_defaults(fp->section, object);
	if (r < 0)
		return r;
	fp->mode = SECTION_KEPT;
	return 0;
}

/* Starts a kept [tunnel:NAME] or [alert:NAME] with every default set. */
static int section_create(struct file_parse *fp, const char *name)
{
	struct loader *l = fp->loader;
	struct config *c = l->config;

	if (fp->section == CONFIG_SECTION_TUNNEL) {
		struct tunnel_config *t =
		    sections_grow(c->tunnels, c->n_tunnels, sizeof(*t), &l->tunnel_states);

		if (!t)
			return -ENOMEM;
		c->tunnels = t;
		fp->index = c->n_tunnels++;
		t = memset(&t[fp->index], 0, sizeof(*t));
		return section_fill(fp, name, t, &t->name, &t->file, &t->line,
				    &l->tunnel_states[fp->index]);
	}
	struct alert_config *a =
	    sections_grow(c->alerts, c->n_alerts, sizeof(*a), &l->alert_states);

	if (!a)
		return -ENOMEM;
	c->alerts = a;
	fp->index = c->n_alerts++;
	a = memset(&a[fp->index], 0, sizeof(*a));
	return section_fill(fp, name, a, &a->name, &a->file, &a->line, &l->alert_states[fp->index]);
}

/* Starts a section whose keys are checked and then thrown away. */
static int section_scratch(struct file_parse *fp)
{
	struct loader *l = fp->loader;

	tunnel_config_finish(&l->scratch_tunnel);
	alert_config_finish(&l->scratch_alert);
	section_state_finish(&l->scratch_state);
	l->scratch_state.at = here(fp);
	fp->mode = SECTION_SCRATCH;
	if (fp->section == CONFIG_SECTION_TUNNEL)
		return config_section_defaults(fp->section, &l->scratch_tunnel);
	if (fp->section == CONFIG_SECTION_ALERT)
		return config_section_defaults(fp->section, &l->scratch_alert);
	return 0;
}

static const struct where *named_section_find(const struct loader *l, enum config_section s,
					      const char *name)
{
	const struct config *c = l->config;

	if (s == CONFIG_SECTION_TUNNEL) {
		for (size_t i = 0; i < c->n_tunnels; i++)
			if (strcmp(c->tunnels[i].name, name) == 0)
				return &l->tunnel_states[i].at;
	} else {
		for (size_t i = 0; i < c->n_alerts; i++)
			if (strcmp(c->alerts[i].name, name) == 0)
				return &l->alert_states[i].at;
	}
	return NULL;
}

static int named_section_begin(struct file_parse *fp, const char *kind, const char *name)
{
	struct loader *l = fp->loader;
	const struct where *first;
	size_t count, limit;

	if (!config_name_valid(name)) {
		loader_error(l, here(fp),
			     "invalid %s name '%s' (use up to %d letters, digits, '.', '_' or '-')",
			     kind, name, CONFIG_NAME_MAX);
		return section_scratch(fp);
	}
	first = named_section_find(l, fp->section, name);
	if (first) {
		loader_error(l, here(fp), "duplicate %s name '%s' (first defined at %s:%u)", kind,
			     name, loader_file(l, *first), first->line);
		return section_scratch(fp);
	}
	count = fp->section == CONFIG_SECTION_TUNNEL ? l->config->n_tunnels : l->config->n_alerts;
	limit = fp->section == CONFIG_SECTION_TUNNEL ? TUNNELS_MAX : ALERTS_MAX;
	if (count >= limit) {
		loader_error(l, here(fp), "too many %s sections (max %zu)", kind, limit);
		return section_scratch(fp);
	}
	return section_create(fp, name);
}

/* Reads "[kind]" or "[kind:NAME]", optionally followed by a comment. */
static int section_begin(struct file_parse *fp, char *line)
{
	struct loader *l = fp->loader;
	char *close = strchr(line, ']'), *text, *end, *colon, *after;
	size_t kind_len;

	fp->mode = SECTION_IGNORED;
	if (!close) {
		loader_error(l, here(fp), "missing ']' in section header");
		return 0;
	}
	after = close + 1 + strspn(close + 1, " \t");
	if (*after && *after != ';' && *after != '#') {
		loader_error(l, here(fp), "unexpected text after section header");
		return 0;
	}
	text = line + 1 + strspn(line + 1, " \t");
	end = close;
	while (end > text && strutil_is_blank(end[-1]))
		end--;
	*end = '\0';
	snprintf(fp->title, sizeof(fp->title), "%s", text);
	colon = strchr(text, ':');
	kind_len = colon ? (size_t)(colon - text) : strlen(text);
	for (size_t s = 0; s < CONFIG_SECTION_COUNT; s++) {
		const struct config_section_info *sec = &config_sections[s];

		if (strlen(sec->name) != kind_len || strncmp(sec->name, text, kind_len) != 0)
			continue;
		if (!sec->named && colon)
			break;
		fp->section = (enum config_section)s;
		if (!sec->named) {
			fp->mode = SECTION_KEPT;
			return 0;
		}
		if (!colon || !colon[1]) {
			loader_error(l, here(fp), "section name missing in [%s] (use [%s:NAME])",
				     text, sec->name);
			return section_scratch(fp);
		}
		return named_section_begin(fp, sec->name, colon + 1);
	}
	loader_error(l, here(fp), "unknown section [%s]", text);
	return 0;
}

static bool is_key_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '-' || c == '.';
}

static bool is_key_line(const char *s)
{
	const char *p = s;

	while (is_key_char(*p))
		p++;
	if (p == s)
		return false;
	while (strutil_is_blank(*p))
		p++;
	return *p == '=';
}

/* The next physical line into fp->buf, newline kept, as getline() returns it. */
static ssize_t next_line(struct file_parse *fp)
{
	const char *nl;
	size_t n;

	if (fp->f)
		return getline(&fp->buf, &fp->cap, fp->f);
	if (fp->mem_left == 0)
		return -1;
	nl = memchr(fp->mem, '\n', fp->mem_left);
	n = nl ? (size_t)(nl - fp->mem) + 1 : fp->mem_left;
	if (n + 1 > fp->cap) {
		char *grown = realloc(fp->buf, n + 1);

		if (!grown) {
			fp->loader->out_of_memory = true;
			return -1;
		}
		fp->buf = grown;
		fp->cap = n + 1;
	}
	memcpy(fp->buf, fp->mem, n);
	fp->buf[n] = '\0';
	fp->mem += n;
	fp->mem_left -= n;
	return (ssize_t)n;
}

/*
 * The inih reader. inih sees only "key = value" lines, left-trimmed: this function counts
 * physical lines (so the handler knows its line), handles section headers itself (inih
 * never reports an empty section), rejects lines inih would cut at INI_MAX_LINE, and never
 * passes an indented line, which inih would take as the continuation of the previous key.
 */
static char *read_line(char *str, int num, void *stream)
{
	struct file_parse *fp = stream;
	struct loader *l = fp->loader;
	size_t max = num > 2 ? (size_t)num - 2 : 0;

	while (!loader_stopped(l)) {
		ssize_t n = next_line(fp);
		bool indented;
		size_t len;
		char *s;

		if (n < 0) {
			if (fp->f && ferror(fp->f))
				loader_error(l, here(fp), "read error: %s", strerror(errno));
			return NULL;
		}
		fp->line++;
		len = (size_t)n;
		if (len > 0 && fp->buf[len - 1] == '\n')
			len--;
		if (len > 0 && fp->buf[len - 1] == '\r')
			len--;
		fp->buf[len] = '\0';
		if (strlen(fp->buf) != len) {
			loader_error(l, here(fp), "line contains a NUL byte");
			continue;
		}
		if (len > max) {
			loader_error(l, here(fp), "line too long (max %zu characters)", max);
			continue;
		}
		s = fp->buf;
		if (fp->line == 1 && strncmp(s, "\xef\xbb\xbf", 3) == 0)
			s += 3;
		indented = strutil_is_blank(*s);
		s += strspn(s, " \t");
		if (!*s || *s == '#' || *s == ';')
			continue;
		if (*s == '[') {
			fp->after_key = false;
			if (section_begin(fp, s) < 0)
				l->out_of_memory = true;
			continue;
		}
		if (!is_key_line(s)) {
			if (indented && fp->after_key)
				loader_error(l, here(fp),
					     "continuation lines are not supported "
					     "(repeat the key on a line of its own)");
			else
				loader_error(l, here(fp),
					     "expected 'key = value', '[section]' or a "
					     "comment");
			continue;
		}
		fp->after_key = true;
		len = strlen(s);
		memcpy(str, s, len);
		str[len] = '\n';
		str[len + 1] = '\0';
		return str;
	}
	return NULL;
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

int loader_read_file(struct loader *l, const char *path, size_t depth, const struct where *from)
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

/* [include] files = GLOB at the current line of fp: every match, sorted, read there. */
static void loader_include(struct file_parse *fp, const char *pattern)
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
			loader_read_file(l, g.gl_pathv[i], fp->depth + 1, &at);
	}
	globfree(&g);
	free(full);
}

static int handle_pair(void *user, const char *section, const char *name, const char *value)
{
	struct file_parse *fp = user;
	struct loader *l = fp->loader;
	struct section_state *state;
	const struct config_key *k;
	size_t key, before = 0;
	char err[512];
	void *object;
	int r;

	(void)section;
	if (loader_stopped(l) || fp->mode == SECTION_IGNORED)
		return 1;
	if (fp->mode == SECTION_NONE) {
		loader_error(l, here(fp), "key '%s' outside of any section", name);
		return 1;
	}
	k = config_key_find(fp->section, name);
	if (!k) {
		loader_error(l, here(fp), "unknown key '%s' in [%s]", name, fp->title);
		return 1;
	}
	object = current_object(fp, &state);
	key = config_key_index(fp->section, k);
	if (state->key_at[key].line && !(k->flags & CONFIG_KEY_REPEATABLE)) {
		loader_error(l, here(fp), "duplicate key '%s' in [%s] (first set at %s:%u)", name,
			     fp->title, loader_file(l, state->key_at[key]),
			     state->key_at[key].line);
		return 1;
	}
	if (!state->key_at[key].line)
		state->key_at[key] = here(fp);
	if (k->type == CONFIG_TYPE_INCLUDE) {
		if (l->no_includes)
			loader_error(l, here(fp), "includes are not allowed here");
		else
			loader_include(fp, value);
		return 1;
	}
	if (k->type == CONFIG_TYPE_FORWARD || k->type == CONFIG_TYPE_WORDS)
		before = *config_count(k, object);
	r = config_key_set(k, object, value, fp->dir, err, sizeof(err));
	if (r == -ENOMEM) {
		l->out_of_memory = true;
		return 1;
	}
	if (r < 0) {
		state->key_bad[key] = true;
		loader_error(l, here(fp), "%s", err);
	}
	/* Even after an error: "tunnels = a b/c" has kept "a". */
	if (k->type == CONFIG_TYPE_FORWARD || k->type == CONFIG_TYPE_WORDS) {
		size_t after = *config_count(k, object);

		for (size_t i = before; i < after; i++) {
			struct where *items =
			    array_grow(state->items, state->n_items, sizeof(*items));

			if (!items) {
				l->out_of_memory = true;
				return 1;
			}
			state->items = items;
			state->items[state->n_items++] = here(fp);
		}
	}
	return 1;
}

int loader_parse(struct loader *l, struct file_parse *fp, const char *path)
{
	int r;

	fp->dir = loader_dir_of(path);
	if (!fp->dir) {
		l->out_of_memory = true;
		return -ENOMEM;
	}
	r = ini_parse_stream(read_line, fp, handle_pair, fp);
	/* The reader passes inih nothing it can reject; this is only a safety net. */
	if (r == -2)
		l->out_of_memory = true;
	else if (r != 0)
		loader_error(l, (struct where){.file = fp->file, .line = (unsigned)r},
			     "syntax error");
	free(fp->buf);
	free(fp->dir);
	fp->buf = fp->dir = NULL;
	return 0;
}
