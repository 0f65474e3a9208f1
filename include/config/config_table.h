#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/*
 * The configuration keys as data (internal to the config folder and its tests). One table
 * per section kind drives parsing, defaults, validation of values, the `check` summary and
 * the moletun.conf(5) key reference, so they cannot disagree. The keys are in config_keys.c,
 * what each value type does in config_types.c.
 */

enum config_section {
	CONFIG_SECTION_MOLETUN,
	CONFIG_SECTION_INCLUDE,
	CONFIG_SECTION_TUNNEL,
	CONFIG_SECTION_ALERT,
	CONFIG_SECTION_COUNT,
};

enum config_type {
	CONFIG_TYPE_STRING,    /* char *, no whitespace */
	CONFIG_TYPE_TEXT,      /* char *, may contain spaces */
	CONFIG_TYPE_HOST,      /* char *, host name or IP address */
	CONFIG_TYPE_URL,       /* char *, http:// or https:// */
	CONFIG_TYPE_PATH,      /* char *, relative paths resolved against the file's directory */
	CONFIG_TYPE_PORT,      /* uint16_t, 1..65535 */
	CONFIG_TYPE_UINT,      /* unsigned, min..max */
	CONFIG_TYPE_BOOL,      /* bool, yes|no */
	CONFIG_TYPE_DURATION,  /* uint64_t milliseconds, min..max */
	CONFIG_TYPE_SIZE,      /* uint64_t bytes, min..max; written N, NK, NM or NG (binary) */
	CONFIG_TYPE_ENUM,      /* int-sized enum, one of `choices` */
	CONFIG_TYPE_LOG_LEVEL, /* int syslog priority */
	CONFIG_TYPE_FORWARD,   /* appended to a forward_spec array (kind in `forward_kind`) */
	CONFIG_TYPE_WORDS,     /* char ** + size_t: space-separated names, appended */
	CONFIG_TYPE_HEADER,    /* char ** + size_t: one "Name: value" per occurrence */
	CONFIG_TYPE_JUMP,      /* struct jump_hop * + size_t: an ssh -J list, "" or none */
	CONFIG_TYPE_INCLUDE,   /* glob, handled by the loader */
	CONFIG_TYPE_COUNT,
};

#define CONFIG_KEY_REQUIRED   0x1u /* must be set in every section of its kind */
#define CONFIG_KEY_REPEATABLE 0x2u /* may appear more than once; each adds an item */
#define CONFIG_KEY_SECRET     0x4u /* value never echoed in messages or summaries */
#define CONFIG_KEY_CONTENTS   0x8u /* PATH: reload also compares the file's digest_offset */

struct config_choice {
	const char *name;
	int value;
};

struct config_key {
	const char *name;
	enum config_type type;
	unsigned flags;
	const char *default_value; /* written as in a file; NULL: unset */
	/* number/duration(ms) range; for strings and paths the maximum length; for lists
	 * the maximum number of items (0: no limit) */
	uint64_t min, max;
	const struct config_choice *choices; /* ENUM, terminated by {NULL, 0} */
	int forward_kind;		     /* FORWARD: enum forward_kind */
	size_t offset;			     /* of the field in the section's struct */
	size_t count_offset;		     /* lists: of the size_t item count */
	size_t digest_offset;		     /* CONTENTS: of the struct file_digest */
	const char *placeholder;	     /* in the man page: "DURATION", "PATH" ... */
	const char *help;
};

struct config_section_info {
	const char *name;   /* "tunnel" */
	bool named;	    /* written [tunnel:NAME] */
	size_t object_size; /* struct the keys point into (0 for include) */
	const struct config_key *keys;
	size_t n_keys;
	const char *help;
};

extern const struct config_section_info config_sections[CONFIG_SECTION_COUNT];

/* Largest number of keys in any section, for per-key bookkeeping arrays. */
#define CONFIG_MAX_KEYS 32

/* Tunnel and alert names: letters, digits, '.', '_' and '-'. */
#define CONFIG_NAME_MAX 64
bool config_name_valid(const char *name);

const struct config_key *config_key_find(enum config_section section, const char *name);
size_t config_key_index(enum config_section section, const struct config_key *key);

/*
 * Parses `value` into the field of `object` that `key` describes (lists append). Relative
 * paths are joined to `base_dir`. Returns 0 or a negative errno with a message such as
 * "invalid duration 'x5' for keepalive_interval" in `err`.
 */
int config_key_set(const struct config_key *key, void *object, const char *value,
		   const char *base_dir, char *err, size_t err_size);

/* Sets every key of `section` that has a default. Returns 0 or -ENOMEM. */
int config_section_defaults(enum config_section section, void *object);

/* Frees what the section's keys own in `object` and zeroes those fields. */
void config_section_free(enum config_section section, void *object);

/* Writes the value as it would be written in a file ("5s", "yes"); "" if unset. */
void config_key_format(const struct config_key *key, const void *object, char *buf, size_t size);

/* True when the field still holds the key's default (false for keys without one). */
bool config_key_is_default(const struct config_key *key, const void *object);

/* True when the field holds the same value in both objects (a path, not what it names). */
bool config_key_equal(const struct config_key *key, const void *a, const void *b);

/* False only for a CONTENTS key whose file digests differ between the objects. */
bool config_key_contents_equal(const struct config_key *key, const void *a, const void *b);
