#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "config_table.h"

/* What the files of the config folder share and no one outside it needs. */

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

#define SECOND (1000ull)
#define MINUTE (60 * SECOND)
#define HOUR   (60 * MINUTE)
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
