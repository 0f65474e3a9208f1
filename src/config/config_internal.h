#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>

#include "config.h"

#include "config_table.h"

/* What the files of the config folder share and no one outside it needs. */

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

#define SECOND (1000ull)
#define MINUTE (60 * SECOND)
#define HOUR   (60 * MINUTE)
#define DAY    (24 * HOUR)
#define KIB    (1024ull)
#define MIB    (1024 * KIB)
#define GIB    (1024 * MIB)

/* realloc() with room for one more item; NULL (the old array intact) when out of memory. */
static inline void *array_grow(void *array, size_t count, size_t item_size)
{
	if (count >= SIZE_MAX / item_size - 1)
		return NULL;
	return realloc(array, (count + 1) * item_size);
}

/* The field of `object` (a struct config, tunnel_config or alert_config) a key describes. */
static inline void *config_field(const struct config_key *k, void *object)
{
	return (char *)object + k->offset;
}

static inline const void *config_const_field(const struct config_key *k, const void *object)
{
	return (const char *)object + k->offset;
}

/* A list's item count. */
static inline size_t *config_count(const struct config_key *k, void *object)
{
	return (size_t *)(void *)((char *)object + k->count_offset);
}

static inline size_t config_const_count(const struct config_key *k, const void *object)
{
	return *(const size_t *)(const void *)((const char *)object + k->count_offset);
}

/*
 * What a value type does, one table per type (tmux's options-table keeps type behaviour in
 * one place the same way). A NULL operation is one the type has nothing to do for: no
 * memory to free, nothing to compare or print; a type without `set` is never set by key.
 */
struct config_type_ops {
	/* Parses `value` into the key's field of `object` (a list appends); relative paths
	 * are joined to base_dir. 0, or a negative errno with a message in err. */
	int (*set)(const struct config_key *k, void *object, const char *value,
		   const char *base_dir, char *err, size_t err_size);
	/* Frees what the field owns and leaves it unset. */
	void (*free)(const struct config_key *k, void *object);
	/* The value as written in a file, into a buffer already holding "". */
	void (*format)(const struct config_key *k, const void *object, char *buf, size_t size);
	bool (*equal)(const struct config_key *k, const void *a, const void *b);
	/* Writes a min or max as the type writes values: set when the reference pages show the
	 * key's range. */
	void (*format_limit)(uint64_t limit, char *buf, size_t size);
	bool allows_empty; /* "" is a value, not a mistake */
};

/* Indexed by enum config_type; never NULL. */
extern const struct config_type_ops *const config_types[CONFIG_TYPE_COUNT];

/* The list types' tables, in config_lists.c. */
extern const struct config_type_ops config_forward_ops;
extern const struct config_type_ops config_words_ops;
extern const struct config_type_ops config_header_ops;
extern const struct config_type_ops config_jump_ops;

/*
 * The loader: config_load.c has the entry points, config_read.c reads files, their lines,
 * sections and includes, config_check.c validates what they built (config_sshhost.c asks
 * ssh -G for it), all on config_loader.c's errors and bookkeeping.
 */

#define INCLUDE_DEPTH_MAX 8

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
	bool unresolved; /* ssh_host failed (reported): the checks that need it are skipped */
};

/* An error message waiting to be sorted by place. */
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
	bool keep_config;		/* handed to the caller: loader_finish leaves it alone */
	bool no_includes;		/* [include] is an error (config_load_buffer) */
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
	/* ssh_host: when every ssh -G of this load must be done by (monotonic ms), 0 before
	 * the first; a reload runs them on the daemon's loop, under its watchdog */
	int64_t ssh_g_deadline_ms;
};

enum section_mode {
	SECTION_NONE,	 /* before the first header */
	SECTION_IGNORED, /* unknown section: its keys are not checked */
	SECTION_KEPT,
	SECTION_SCRATCH,
};

/* One file (or buffer) being read. */
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

/* config_loader.c */

/* Records an error at `at` (sorted by place when handed over); counts past the cap. */
void loader_error(struct loader *l, struct where at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Hands the diagnostics over sorted by file (in the order first read) and line. */
void loader_flush_diags(struct loader *l, struct diag *out);
/* Too many errors, or out of memory: nothing more is read or checked. */
bool loader_stopped(const struct loader *l);
/* Returns the index of `path` in l->files, adding it if new, or -ENOMEM. */
ssize_t loader_intern_file(struct loader *l, const char *path);

static inline const char *loader_file(const struct loader *l, struct where at)
{
	return l->files[at.file];
}

/* The directory part of `path` (dirname(3)) in a string of its own, or NULL. */
char *loader_dir_of(const char *path);

/* Whether a key was set in the section (by ssh_host too), or set to a value it refused. */
bool section_key_given(const struct section_state *s, enum config_section section, const char *name);
bool section_key_bad(const struct section_state *s, enum config_section section, const char *name);
/* Where the key was set, or the section header when it was not. */
struct where section_key_where(const struct section_state *s, enum config_section section,
			       const char *name);

void section_state_finish(struct section_state *s);
void tunnel_config_finish(struct tunnel_config *t);
void alert_config_finish(struct alert_config *a);

/* config_read.c */

/* Reads `path` (an include when `from` is set: errors are reported there). */
int loader_read_file(struct loader *l, const char *path, size_t depth, const struct where *from);
/* Reads every line of fp (a file or a buffer) named `path`; 0 or -ENOMEM. */
int loader_parse(struct loader *l, struct file_parse *fp, const char *path);

/* The checks across keys and sections, once everything is read (config_check.c). */
void loader_validate(struct loader *l);
/* Every tunnel with ssh_host: what ssh -G says set where the section did not (config_sshhost.c). */
void loader_resolve_ssh_hosts(struct loader *l);
