#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <grp.h>
#include <ini.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config_table.h"
#include "duration.h"
#include "privfile.h"
#include "redact.h"

#define INCLUDE_DEPTH_MAX 8
#define INCLUDE_FILES_MAX 1024
#define TUNNELS_MAX	  1024
#define ALERTS_MAX	  64
/* A binary or runaway file should not print a million lines. */
#define ERRORS_MAX 200

/* A place in the configuration: index into loader.files and a 1-based line (0: none). */
struct where {
	size_t file;
	unsigned line;
};

/* What the loader remembers about one section while validating it. */
struct section_state {
	struct where at;
	struct where key_at[CONFIG_MAX_KEYS]; /* first occurrence; line 0 when unset */
	bool key_bad[CONFIG_MAX_KEYS];	      /* some occurrence had an invalid value */
	struct where *items;		      /* per forward (tunnel) or filter name (alert) */
	size_t n_items;
};

struct pending_diag {
	struct where at;
	size_t seq;
	char *text;
};

struct loader {
	struct config *config;
	char **files; /* every file name seen, for diagnostics */
	size_t n_files;
	struct pending_diag *diags;
	size_t n_diags;
	size_t errors;
	bool out_of_memory;
	bool keep_config; /* handed to the caller: loader_finish leaves it alone */
	bool no_includes; /* [include] is an error (config_load_buffer) */
	config_key_verifier verify_key; /* config_load_verified */
	struct section_state moletun_state;
	struct section_state include_state;
	struct section_state *tunnel_states; /* parallel to config->tunnels */
	struct section_state *alert_states;  /* parallel to config->alerts */
	/* Sections that are reported but not kept (duplicate or invalid name): their keys are
	 * still checked so that every error shows in one run. */
	struct tunnel_config scratch_tunnel;
	struct alert_config scratch_alert;
	struct section_state scratch_state;
	struct {
		dev_t dev;
		ino_t ino;
	} open_files[INCLUDE_DEPTH_MAX + 1];
	size_t depth;
	size_t files_read;
};

enum section_mode {
	SECTION_NONE,	 /* before the first header */
	SECTION_IGNORED, /* unknown section: its keys are not checked */
	SECTION_KEPT,
	SECTION_SCRATCH,
};

struct file_parse {
	struct loader *loader;
	FILE *f;	 /* NULL when reading from memory instead: */
	const char *mem; /* the text not read yet */
	size_t mem_left;
	size_t file;
	char *dir;
	size_t depth; /* 0 for the main file */
	unsigned line;
	char *buf;
	size_t cap;
	enum section_mode mode;
	enum config_section section;
	size_t index;	 /* into config->tunnels or config->alerts */
	char title[128]; /* "tunnel:primary" */
	bool after_key;	 /* for the continuation-line message */
};

static void loader_error(struct loader *l, struct where at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void loader_error(struct loader *l, struct where at, const char *fmt, ...)
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
	grown = realloc(l->diags, (l->n_diags + 1) * sizeof(*grown));
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

static bool loader_stopped(const struct loader *l)
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
	grown = copy ? realloc(l->files, (l->n_files + 1) * sizeof(*grown)) : NULL;
	if (!grown) {
		free(copy);
		l->out_of_memory = true;
		return -ENOMEM;
	}
	l->files = grown;
	l->files[l->n_files] = copy;
	return (ssize_t)l->n_files++;
}

static void section_state_finish(struct section_state *s)
{
	free(s->items);
	memset(s, 0, sizeof(*s));
}

static void tunnel_config_finish(struct tunnel_config *t)
{
	config_section_free(CONFIG_SECTION_TUNNEL, t);
	free(t->name);
	free(t->file);
	memset(t, 0, sizeof(*t));
}

static void alert_config_finish(struct alert_config *a)
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

static struct where here(const struct file_parse *fp)
{
	return (struct where){.file = fp->file, .line = fp->line};
}

static const char *where_file(const struct loader *l, struct where at)
{
	return l->files[at.file];
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

/* realloc() with room for one more item; NULL (the old array intact) when out of memory. */
static void *array_grow(void *array, size_t count, size_t item_size)
{
	if (count >= SIZE_MAX / item_size - 1)
		return NULL;
	return realloc(array, (count + 1) * item_size);
}

/* Starts a kept [tunnel:NAME] or [alert:NAME] with every default set. */
static int section_create(struct file_parse *fp, const char *name)
{
	struct loader *l = fp->loader;
	struct config *c = l->config;
	char **name_field, **file_field;
	unsigned *line_field;
	struct section_state *state;
	void *object;
	int r;

	if (fp->section == CONFIG_SECTION_TUNNEL) {
		struct tunnel_config *t = array_grow(c->tunnels, c->n_tunnels, sizeof(*t));
		struct section_state *states;

		if (!t)
			return -ENOMEM;
		c->tunnels = t;
		states = array_grow(l->tunnel_states, c->n_tunnels, sizeof(*states));
		if (!states)
			return -ENOMEM;
		l->tunnel_states = states;
		fp->index = c->n_tunnels++;
		t = &c->tunnels[fp->index];
		state = &l->tunnel_states[fp->index];
		memset(t, 0, sizeof(*t));
		object = t;
		name_field = &t->name;
		file_field = &t->file;
		line_field = &t->line;
	} else {
		struct alert_config *a = array_grow(c->alerts, c->n_alerts, sizeof(*a));
		struct section_state *states;

		if (!a)
			return -ENOMEM;
		c->alerts = a;
		states = array_grow(l->alert_states, c->n_alerts, sizeof(*states));
		if (!states)
			return -ENOMEM;
		l->alert_states = states;
		fp->index = c->n_alerts++;
		a = &c->alerts[fp->index];
		state = &l->alert_states[fp->index];
		memset(a, 0, sizeof(*a));
		object = a;
		name_field = &a->name;
		file_field = &a->file;
		line_field = &a->line;
	}
	memset(state, 0, sizeof(*state));
	state->at = here(fp);
	*line_field = fp->line;
	*name_field = strdup(name);
	*file_field = strdup(l->files[fp->file]);
	if (!*name_field || !*file_field)
		return -ENOMEM;
	r = config_section_defaults(fp->section, object);
	if (r < 0)
		return r;
	fp->mode = SECTION_KEPT;
	return 0;
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
			     name, where_file(l, *first), first->line);
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

static bool is_blank(char c)
{
	return c == ' ' || c == '\t';
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
	while (end > text && is_blank(end[-1]))
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
	while (is_blank(*p))
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
		indented = is_blank(*s);
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

static int load_file(struct loader *l, const char *path, size_t depth, const struct where *from);

static int path_compare(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* [include] files = GLOB: every match, sorted, read at this point. */
static void include_files(struct file_parse *fp, const char *pattern)
{
	struct loader *l = fp->loader;
	struct where at = here(fp);
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
			     fp->title, where_file(l, state->key_at[key]), state->key_at[key].line);
		return 1;
	}
	if (!state->key_at[key].line)
		state->key_at[key] = here(fp);
	if (k->type == CONFIG_TYPE_INCLUDE) {
		if (l->no_includes)
			loader_error(l, here(fp), "includes are not allowed here");
		else
			include_files(fp, value);
		return 1;
	}
	if (k->type == CONFIG_TYPE_FORWARD || k->type == CONFIG_TYPE_WORDS)
		before = *(size_t *)(void *)((char *)object + k->count_offset);
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
		size_t after = *(size_t *)(void *)((char *)object + k->count_offset);

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

/* Reads every line of fp (a file or a buffer) named `path`; 0 or -ENOMEM. */
static int parse_file(struct loader *l, struct file_parse *fp, const char *path)
{
	char *copy = strdup(path);
	int r;

	fp->dir = copy ? strdup(dirname(copy)) : NULL;
	free(copy);
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
		if (from)
			loader_error(l, *from, "include file %s: %s", path, strerror(-r));
		else
			loader_error(l, (struct where){.file = fp.file}, "%s", strerror(-r));
		return r;
	}
	r = 0;
	if (fstat(fileno(fp.f), &st) < 0) {
		r = -errno;
		if (from)
			loader_error(l, *from, "include file %s: %s", path, strerror(-r));
		else
			loader_error(l, (struct where){.file = fp.file}, "%s", strerror(-r));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		r = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
		if (from)
			loader_error(l, *from, "include file %s: not a regular file", path);
		else
			loader_error(l, (struct where){.file = fp.file}, "not a regular file");
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
	r = parse_file(l, &fp, path);
	l->depth--;
out:
	fclose(fp.f);
	return r;
}

static bool key_given(const struct section_state *s, enum config_section section, const char *name)
{
	const struct config_key *k = config_key_find(section, name);

	return s->key_at[config_key_index(section, k)].line != 0;
}

static bool key_bad(const struct section_state *s, enum config_section section, const char *name)
{
	const struct config_key *k = config_key_find(section, name);

	return s->key_bad[config_key_index(section, k)];
}

/* Where the key was set, or the section header when it was not. */
static struct where key_where(const struct section_state *s, enum config_section section,
			      const char *name)
{
	const struct config_key *k = config_key_find(section, name);
	struct where at = s->key_at[config_key_index(section, k)];

	return at.line ? at : s->at;
}

static bool starts_with(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

enum key_kind {
	KEY_PLAIN,
	KEY_ENCRYPTED,
	KEY_PUBLIC,
	KEY_UNKNOWN,
};

/*
 * Looks at the start of an identity file, so that a public key given by mistake, a file
 * that is not a key, or an encrypted key without a passphrase file is caught here rather
 * than at the first connection.
 */
static int key_kind_read(int fd, enum key_kind *ret)
{
	/* base64 of "openssh-key-v1\0", then of the cipher name "none" */
	static const char openssh_magic[] = "b3BlbnNzaC1rZXktdjEA";
	static const char openssh_plain[] = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmU";
	char head[512], *body;
	ssize_t n = read(fd, head, sizeof(head) - 1);

	if (n < 0)
		return -errno;
	head[n] = '\0';
	body = strchr(head, '\n');
	body = body ? body + 1 : head;
	if (starts_with(head, "ssh-") || starts_with(head, "ecdsa-") || starts_with(head, "sk-"))
		*ret = KEY_PUBLIC;
	else if (!starts_with(head, "-----BEGIN ") || !strstr(head, "PRIVATE KEY-----"))
		*ret = KEY_UNKNOWN;
	else if (starts_with(head, "-----BEGIN OPENSSH PRIVATE KEY-----"))
		*ret = starts_with(body, openssh_magic) && !starts_with(body, openssh_plain)
			   ? KEY_ENCRYPTED
			   : KEY_PLAIN;
	else
		*ret = strstr(head, "ENCRYPTED") ? KEY_ENCRYPTED : KEY_PLAIN;
	/* the start of an unencrypted key is the key */
	explicit_bzero(head, sizeof(head));
	return 0;
}

/* Records the digest of the open `fd` for reload, or reports why it cannot be read. */
static void record_digest(struct loader *l, const char *what, const char *path, struct where at,
			  int fd, struct file_digest *ret)
{
	int r = file_digest_read(fd, ret);

	if (r < 0)
		loader_error(l, at, "%s %s: %s", what, path, strerror(-r));
}

/*
 * OpenSSH's rule for private keys: a regular file that only its owner may access; and
 * ours: not through a symbolic link, owned by root or the daemon's user, checked on the
 * descriptor that is read (privfile_open). For an identity file (`is_key`), what kind of
 * key it holds is reported first: a public key is usually mode 0644, and "use the private
 * key" is the more useful message; an encrypted one without `has_passphrase` names
 * `passphrase_key`. A file that passes gets its digest recorded in *ret_digest. Returns
 * true when it passed.
 */
static bool check_private_file(struct loader *l, const char *what, const char *path,
			       struct where at, const char *refused, bool is_key,
			       const char *passphrase_key, bool has_passphrase,
			       struct file_digest *ret_digest)
{
	enum key_kind kind = KEY_PLAIN;
	struct privfile_result res;
	/* the mode is checked below, after the kind of key */
	int fd = privfile_open(path, O_RDONLY, 0, &res);
	size_t errors = l->errors;
	char why[200];
	int r;

	if (fd < 0) {
		privfile_describe(&res, why, sizeof(why));
		loader_error(l, at, "%s %s: %s", what, path, why);
		return false;
	}
	if (is_key) {
		r = key_kind_read(fd, &kind);
		if (r < 0) {
			loader_error(l, at, "%s %s: %s", what, path, strerror(-r));
			goto out;
		}
	}
	if (kind == KEY_PUBLIC)
		loader_error(l, at, "%s %s is a public key: use the private key", what, path);
	else if (kind == KEY_UNKNOWN)
		loader_error(l, at, "%s %s is not a private key (expected OpenSSH format)", what,
			     path);
	else if (res.st.st_mode & PRIVFILE_MODE_SECRET)
		loader_error(l, at,
			     "%s %s is %s by group or others (mode %04o): like OpenSSH, moletun "
			     "refuses unprotected %s",
			     what, path, (res.st.st_mode & 044) ? "readable" : "accessible",
			     (unsigned)(res.st.st_mode & 07777), refused);
	else if (kind == KEY_ENCRYPTED && !has_passphrase)
		loader_error(l, at, "%s %s is encrypted: set %s", what, path, passphrase_key);
	else
		record_digest(l, what, path, at, fd, ret_digest);
out:
	close(fd);
	return l->errors == errors;
}

/*
 * A reload compares the contents of known_hosts_file only under strict_host_key_checking =
 * yes (the daemon narrows the digest taken here to the lines that name the tunnel's server
 * or bastions: daemon_digest_known_hosts). Under accept-new moletun appends to the file itself, so every tunnel naming it would
 * restart at the next reload after any of them learned a host key, and such a restart
 * would re-check little: the file is read again at every connection anyway, and a host
 * missing from it is trusted anew. After correcting a learned key by hand, use moletun ctl
 * reconnect. Under no, the file decides nothing. The file is held to the rule hostkey.c
 * reads it under: no symbolic link, owner root or the daemon's user, not writable by group
 * or others.
 */
static void check_known_hosts(struct loader *l, struct tunnel_config *t, struct where at)
{
	const char *path = t->known_hosts_file;
	struct privfile_result res;
	struct stat st;
	char *copy, *dir, why[200];
	int fd = privfile_open(path, O_RDONLY, PRIVFILE_MODE_TRUSTED, &res);

	if (fd >= 0) {
		if (t->strict_host_key_checking == HOST_KEY_STRICT)
			record_digest(l, "known_hosts file", path, at, fd,
				      &t->known_hosts_file_digest);
		close(fd);
		return;
	}
	if (res.problem != PRIVFILE_ERRNO || res.error != ENOENT ||
	    t->strict_host_key_checking != HOST_KEY_ACCEPT_NEW) {
		privfile_describe(&res, why, sizeof(why));
		loader_error(l, at, "known_hosts file %s: %s", path, why);
		return;
	}
	/* accept-new creates the file, but not its directory. */
	copy = strdup(path);
	if (!copy) {
		l->out_of_memory = true;
		return;
	}
	dir = dirname(copy);
	if (stat(dir, &st) < 0)
		loader_error(l, at, "known_hosts file %s cannot be created: %s: %s", path, dir,
			     strerror(errno));
	else if (!S_ISDIR(st.st_mode))
		loader_error(l, at, "known_hosts file %s cannot be created: %s: not a directory",
			     path, dir);
	free(copy);
}

/* The names of one key's config keys and where its fields are. */
struct key_files {
	const char *key_name, *passphrase_name;
	const char *what, *passphrase_what; /* in messages */
	char *path, *passphrase_path;
	struct file_digest *digest, *passphrase_digest;
};

static struct key_files key_files_of(struct tunnel_config *t, enum tunnel_key which)
{
	if (which == TUNNEL_KEY_JUMP)
		return (struct key_files){
		    .key_name = "proxy_jump_identity_file",
		    .passphrase_name = "proxy_jump_identity_passphrase_file",
		    .what = "proxy_jump identity file",
		    .passphrase_what = "proxy_jump identity passphrase file",
		    .path = t->jump_identity_file,
		    .passphrase_path = t->jump_identity_passphrase_file,
		    .digest = &t->jump_identity_file_digest,
		    .passphrase_digest = &t->jump_identity_passphrase_file_digest,
		};
	return (struct key_files){
	    .key_name = "identity_file",
	    .passphrase_name = "identity_passphrase_file",
	    .what = "identity file",
	    .passphrase_what = "identity passphrase file",
	    .path = t->identity_file,
	    .passphrase_path = t->identity_passphrase_file,
	    .digest = &t->identity_file_digest,
	    .passphrase_digest = &t->identity_passphrase_file_digest,
	};
}

/*
 * One key and its passphrase file: the permission and format checks, then (moletun check)
 * whether the passphrase opens the key; the daemon would find out anyway.
 */
static void check_key_files(struct loader *l, struct tunnel_config *t,
			    const struct section_state *s, enum tunnel_key which)
{
	const enum config_section sec = CONFIG_SECTION_TUNNEL;
	struct key_files k = key_files_of(t, which);
	bool key_ok = false;

	if (k.path)
		key_ok = check_private_file(l, k.what, k.path, key_where(s, sec, k.key_name),
					    "private keys", true, k.passphrase_name,
					    k.passphrase_path != NULL, k.digest);
	if (k.passphrase_path)
		key_ok = check_private_file(l, k.passphrase_what, k.passphrase_path,
					    key_where(s, sec, k.passphrase_name), "key passphrases",
					    false, NULL, false, k.passphrase_digest) &&
			 key_ok;
	if (k.path && key_ok && l->verify_key) {
		char err[512];

		if (l->verify_key(t, which, err, sizeof(err)) < 0)
			loader_error(l, key_where(s, sec, k.key_name), "%s", err);
	}
}

/* proxy_jump's keys, and every hop's user (the tunnel's unless the hop names one). */
static void validate_jump(struct loader *l, struct tunnel_config *t, const struct section_state *s)
{
	const enum config_section sec = CONFIG_SECTION_TUNNEL;
	bool jump_bad = key_bad(s, sec, "proxy_jump");

	if (key_given(s, sec, "proxy_jump_identity_file") && t->n_jump_hops == 0 && !jump_bad)
		loader_error(l, key_where(s, sec, "proxy_jump_identity_file"),
			     "proxy_jump_identity_file needs proxy_jump");
	if (key_given(s, sec, "proxy_jump_identity_passphrase_file") &&
	    !key_given(s, sec, "proxy_jump_identity_file"))
		loader_error(l, key_where(s, sec, "proxy_jump_identity_passphrase_file"),
			     "proxy_jump_identity_passphrase_file needs proxy_jump_identity_file");
	check_key_files(l, t, s, TUNNEL_KEY_JUMP);
	for (size_t h = 0; h < t->n_jump_hops && t->user; h++) {
		if (t->jump_hops[h].user)
			continue;
		t->jump_hops[h].user = strdup(t->user);
		if (!t->jump_hops[h].user)
			l->out_of_memory = true;
	}
}

static void validate_tunnel(struct loader *l, size_t i)
{
	const enum config_section sec = CONFIG_SECTION_TUNNEL;
	const struct config_section_info *info = &config_sections[sec];
	struct tunnel_config *t = &l->config->tunnels[i];
	const struct section_state *s = &l->tunnel_states[i];

	for (size_t k = 0; k < info->n_keys; k++)
		if ((info->keys[k].flags & CONFIG_KEY_REQUIRED) && !s->key_at[k].line)
			loader_error(l, s->at, "missing required key '%s' in [tunnel:%s]",
				     info->keys[k].name, t->name);
	if (!key_given(s, sec, "local_forward") && !key_given(s, sec, "remote_forward"))
		loader_error(l, s->at,
			     "no forwards in [tunnel:%s] (add local_forward or remote_forward)",
			     t->name);
	if (!key_given(s, sec, "identity_file") && !t->use_agent && !key_bad(s, sec, "use_agent"))
		loader_error(l, s->at,
			     "no authentication in [tunnel:%s] (set identity_file or use_agent = "
			     "yes)",
			     t->name);
	if (key_given(s, sec, "identity_passphrase_file") && !key_given(s, sec, "identity_file"))
		loader_error(l, key_where(s, sec, "identity_passphrase_file"),
			     "identity_passphrase_file needs identity_file");
	if (key_given(s, sec, "agent_socket") && !t->use_agent && !key_bad(s, sec, "use_agent"))
		loader_error(l, key_where(s, sec, "agent_socket"),
			     "agent_socket needs use_agent = yes");
	check_key_files(l, t, s, TUNNEL_KEY_IDENTITY);
	validate_jump(l, t, s);
	if (!key_bad(s, sec, "strict_host_key_checking") &&
	    t->strict_host_key_checking != HOST_KEY_NO) {
		if (!key_given(s, sec, "known_hosts_file"))
			loader_error(l, s->at,
				     "known_hosts_file required unless strict_host_key_checking = "
				     "no");
		else if (t->known_hosts_file)
			check_known_hosts(l, t, key_where(s, sec, "known_hosts_file"));
	}
	if (!key_bad(s, sec, "backoff_initial") && !key_bad(s, sec, "backoff_max") &&
	    t->backoff_initial_ms > t->backoff_max_ms) {
		char initial[32], max[32];
		struct where at = key_given(s, sec, "backoff_initial")
				      ? key_where(s, sec, "backoff_initial")
				      : key_where(s, sec, "backoff_max");

		duration_format(t->backoff_initial_ms, initial, sizeof(initial));
		duration_format(t->backoff_max_ms, max, sizeof(max));
		loader_error(l, at, "backoff_initial %s is greater than backoff_max %s", initial,
			     max);
	}
}

struct listen_entry {
	const struct forward_spec *forward;
	size_t tunnel;
	struct where at;
	size_t seq;
};

static int listen_entry_compare(const void *a, const void *b)
{
	const struct listen_entry *x = a, *y = b;

	if (x->forward->listen_port != y->forward->listen_port)
		return x->forward->listen_port < y->forward->listen_port ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static bool is_wildcard(const char *host)
{
	return strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0;
}

/* Same port, and the same address or a wildcard on either side. */
static bool listen_conflict(const struct config *c, const struct listen_entry *a,
			    const struct listen_entry *b)
{
	const char *ha = a->forward->listen_host, *hb = b->forward->listen_host;
	const struct tunnel_config *ta = &c->tunnels[a->tunnel], *tb = &c->tunnels[b->tunnel];

	if (strcmp(ha, hb) != 0 && !is_wildcard(ha) && !is_wildcard(hb))
		return false;
	if (a->forward->kind == FORWARD_LOCAL)
		return true;
	/* Remote listeners only collide on the same server; a missing host (already reported)
	 * is no server at all. */
	return ta->port == tb->port && ta->host && tb->host && strcmp(ta->host, tb->host) == 0;
}

static void check_listen_conflicts(struct loader *l, enum forward_kind kind)
{
	const struct config *c = l->config;
	struct listen_entry *entries = NULL;
	size_t n = 0;

	for (size_t t = 0; t < c->n_tunnels; t++) {
		for (size_t f = 0; f < c->tunnels[t].n_forwards; f++) {
			if (c->tunnels[t].forwards[f].kind != kind)
				continue;
			struct listen_entry *grown = array_grow(entries, n, sizeof(*grown));

			if (!grown) {
				l->out_of_memory = true;
				free(entries);
				return;
			}
			entries = grown;
			entries[n] = (struct listen_entry){
			    .forward = &c->tunnels[t].forwards[f],
			    .tunnel = t,
			    .at = l->tunnel_states[t].items[f],
			    .seq = n,
			};
			n++;
		}
	}
	if (n > 0)
		qsort(entries, n, sizeof(*entries), listen_entry_compare);
	for (size_t group = 0; group < n;) {
		size_t end = group + 1;

		while (end < n &&
		       entries[end].forward->listen_port == entries[group].forward->listen_port)
			end++;
		for (size_t j = group + 1; j < end; j++) {
			for (size_t i = group; i < j; i++) {
				char address[300];

				if (!listen_conflict(c, &entries[i], &entries[j]))
					continue;
				fwdspec_format_listen(entries[j].forward, address, sizeof(address));
				loader_error(l, entries[j].at,
					     "%slisten address %s already used by tunnel '%s' "
					     "(%s:%u)",
					     kind == FORWARD_REMOTE ? "remote " : "", address,
					     c->tunnels[entries[i].tunnel].name,
					     where_file(l, entries[i].at), entries[i].at.line);
				break;
			}
		}
		group = end;
	}
	free(entries);
}

static void validate_alert(struct loader *l, size_t i)
{
	const enum config_section sec = CONFIG_SECTION_ALERT;
	const struct alert_config *a = &l->config->alerts[i];
	const struct section_state *s = &l->alert_states[i];
	bool url = key_given(s, sec, "url"), exec = key_given(s, sec, "exec");

	if (url && exec)
		loader_error(l, s->at, "both url and exec in [alert:%s] (use exactly one)",
			     a->name);
	else if (!url && !exec)
		loader_error(l, s->at, "missing url or exec in [alert:%s]", a->name);
	if (exec && !url) {
		if (key_given(s, sec, "format"))
			loader_error(l, key_where(s, sec, "format"),
				     "format is only used with url");
		if (key_given(s, sec, "header"))
			loader_error(l, key_where(s, sec, "header"),
				     "header is only used with url");
	}
	if (a->exec) {
		struct stat st;

		if (stat(a->exec, &st) < 0)
			loader_error(l, key_where(s, sec, "exec"), "exec %s: %s", a->exec,
				     strerror(errno));
		else if (!S_ISREG(st.st_mode))
			loader_error(l, key_where(s, sec, "exec"), "exec %s: not a regular file",
				     a->exec);
		else if (access(a->exec, X_OK) < 0)
			loader_error(l, key_where(s, sec, "exec"), "exec %s is not executable",
				     a->exec);
	}
	for (size_t j = 0; j < a->n_tunnels; j++)
		if (!config_find_tunnel(l->config, a->tunnels[j]))
			loader_error(l, s->items[j], "unknown tunnel '%s' in tunnels of [alert:%s]",
				     a->tunnels[j], a->name);
}

static void validate_group(struct loader *l)
{
	const struct config *c = l->config;
	struct group grp, *found = NULL;
	char buf[4096];

	/* A numeric gid needs no group entry. */
	if (!c->control_group || strspn(c->control_group, "0123456789") == strlen(c->control_group))
		return;
	if (getgrnam_r(c->control_group, &grp, buf, sizeof(buf), &found) != 0 || !found)
		loader_error(l,
			     key_where(&l->moletun_state, CONFIG_SECTION_MOLETUN, "control_group"),
			     "unknown group '%s' for control_group", c->control_group);
}

/*
 * node_exporter serves whatever file is at metrics_textfile. In a directory every user may
 * write to, another user can replace the file moletun wrote or, with the sticky bit (as
 * /tmp), put one there first that moletun then cannot replace: the metrics would say
 * what that user wants. A directory that does not exist yet is fine: the daemon logs its
 * failed writes until it does.
 */
static void validate_metrics_textfile(struct loader *l)
{
	const char *path = l->config->metrics_textfile;
	struct where at;
	struct stat st;
	char *copy, *dir;

	if (!path)
		return;
	copy = strdup(path);
	if (!copy) {
		l->out_of_memory = true;
		return;
	}
	dir = dirname(copy);
	at = key_where(&l->moletun_state, CONFIG_SECTION_MOLETUN, "metrics_textfile");
	if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & S_IWOTH)) {
		bool sticky = st.st_mode & S_ISVTX;

		loader_error(l, at,
			     "metrics_textfile %s: directory %s is writable by every user (mode "
			     "%04o%s): %s; use a directory only moletun and root may write, such "
			     "as /var/lib/prometheus/node-exporter",
			     path, dir, (unsigned)(st.st_mode & 07777),
			     sticky ? ", sticky like /tmp" : "",
			     sticky ? "a file another user puts there first cannot be replaced "
				      "by moletun, and node_exporter would serve it"
				    : "another user can replace the file node_exporter serves");
	}
	free(copy);
}

static void validate(struct loader *l)
{
	for (size_t i = 0; i < l->config->n_tunnels; i++)
		validate_tunnel(l, i);
	check_listen_conflicts(l, FORWARD_LOCAL);
	check_listen_conflicts(l, FORWARD_REMOTE);
	for (size_t i = 0; i < l->config->n_alerts; i++)
		validate_alert(l, i);
	validate_group(l);
	validate_metrics_textfile(l);
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

		r = parse_file(&l, &fp, path);
	} else {
		r = load_file(&l, path, 0, NULL);
	}
	if (r == 0 && !loader_stopped(&l))
		validate(&l);
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

/* "  key=value" for every key that has a default and is not at it. */
static void print_non_defaults(enum config_section section, const void *object, const char *skip,
			       FILE *out)
{
	const struct config_section_info *info = &config_sections[section];
	char value[256];

	for (size_t k = 0; k < info->n_keys; k++) {
		const struct config_key *key = &info->keys[k];

		if (skip && strcmp(key->name, skip) == 0)
			continue;
		if (!key->default_value || config_key_is_default(key, object))
			continue;
		config_key_format(key, object, value, sizeof(value));
		fprintf(out, "  %s=%s", key->name, value);
	}
}

void config_print_summary(const struct config *c, FILE *out)
{
	int width = 0, alert_width = 0;

	/* Names are padded within tunnels and within alerts, so columns line up. */
	for (size_t i = 0; i < c->n_tunnels; i++)
		if ((int)strlen(c->tunnels[i].name) > width)
			width = (int)strlen(c->tunnels[i].name);
	for (size_t i = 0; i < c->n_alerts; i++)
		if ((int)strlen(c->alerts[i].name) > alert_width)
			alert_width = (int)strlen(c->alerts[i].name);
	if (c->n_tunnels == 0)
		fputs("no tunnels configured\n", out);
	for (size_t i = 0; i < c->n_tunnels; i++) {
		const struct tunnel_config *t = &c->tunnels[i];
		bool v6 = strchr(t->host, ':') != NULL;

		fprintf(out, "%-*s  %s@%s%s%s:%u", width, t->name, t->user, v6 ? "[" : "", t->host,
			v6 ? "]" : "", (unsigned)t->port);
		if (t->n_jump_hops > 0) {
			char via[JUMP_HOPS_MAX * JUMP_HOP_TEXT_MAX];

			jumpspec_format(t->jump_hops, t->n_jump_hops, via, sizeof(via));
			fprintf(out, " via %s", via);
		}
		for (size_t f = 0; f < t->n_forwards; f++) {
			char listen[300], target[300];

			fwdspec_format_listen(&t->forwards[f], listen, sizeof(listen));
			fwdspec_format_target(&t->forwards[f], target, sizeof(target));
			fprintf(out, "  %c %s -> %s",
				t->forwards[f].kind == FORWARD_LOCAL ? 'L' : 'R', listen, target);
		}
		print_non_defaults(CONFIG_SECTION_TUNNEL, t, "port", out);
		fputc('\n', out);
	}
	for (size_t i = 0; i < c->n_alerts; i++) {
		const struct alert_config *a = &c->alerts[i];
		char target[300];

		if (a->url)
			url_redact(a->url, target, sizeof(target));
		fprintf(out, "alert:%-*s  %s %s", alert_width, a->name,
			a->url ? alert_format_str(a->format) : "exec", a->url ? target : a->exec);
		print_non_defaults(CONFIG_SECTION_ALERT, a, "format", out);
		if (a->n_tunnels) {
			fputs("  tunnels=", out);
			for (size_t j = 0; j < a->n_tunnels; j++)
				fprintf(out, "%s%s", j ? "," : "", a->tunnels[j]);
		}
		if (a->n_headers)
			fprintf(out, "  headers=%zu", a->n_headers);
		fputc('\n', out);
	}
}

void config_warnings(const struct config *c, struct diag *out)
{
	if (c->n_tunnels == 0)
		diag_add(out, c->path, 0, "no tunnels configured");
	for (size_t i = 0; i < c->n_tunnels; i++) {
		const struct tunnel_config *t = &c->tunnels[i];

		if (t->strict_host_key_checking == HOST_KEY_NO)
			diag_add(out, t->file, t->line,
				 "tunnel '%s' does not check the server's host key "
				 "(strict_host_key_checking = no): anyone on the path can "
				 "impersonate it",
				 t->name);
		for (size_t f = 0; f < t->n_forwards; f++) {
			char listen[300];

			if (t->forwards[f].kind != FORWARD_LOCAL ||
			    !is_wildcard(t->forwards[f].listen_host))
				continue;
			fwdspec_format_listen(&t->forwards[f], listen, sizeof(listen));
			diag_add(out, t->file, t->line,
				 "tunnel '%s' listens on every address (%s): anyone who can "
				 "reach this machine can use the forward",
				 t->name, listen);
		}
	}
}
