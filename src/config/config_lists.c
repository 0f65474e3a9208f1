#include "config_table.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "config_internal.h"
#include "fwdspec.h"
#include "hostspec.h"
#include "jumpspec.h"
#include "strutil.h"

/*
 * The value types that hold a list and a count beside it: forwards, tunnel names, HTTP
 * headers (a repeated key appends) and proxy_jump's bastions (set whole).
 */

/* RFC 9110 token characters for the header name; the value must not be empty. */
static bool header_valid(const char *h)
{
	const char *p = h;

	while (*p && (hostspec_is_hostname_char(*p) || strchr("!#$%&'*+^`|~", *p)))
		p++;
	if (p == h || *p != ':')
		return false;
	p++;
	while (strutil_is_blank(*p))
		p++;
	return *p != '\0';
}

static int add_forward(const struct config_key *k, void *object, const char *value,
		       const char *base_dir, char *err, size_t err_size)
{
	struct forward_spec **forwards = config_field(k, object), *grown, spec;
	size_t *count = config_count(k, object);
	char reason[160];

	(void)base_dir;
	if (fwdspec_parse((enum forward_kind)k->forward_kind, value, &spec, reason,
			  sizeof(reason)) < 0) {
		snprintf(err, err_size, "invalid %s '%s': %s", k->name, value, reason);
		return -EINVAL;
	}
	if (k->max && *count >= k->max) {
		snprintf(err, err_size, "too many forwards (max %llu)", (unsigned long long)k->max);
		return -E2BIG;
	}
	grown = array_grow(*forwards, *count, sizeof(spec));
	if (!grown)
		return -ENOMEM;
	*forwards = grown;
	(*forwards)[(*count)++] = spec;
	return 0;
}

static void free_forwards(const struct config_key *k, void *object)
{
	struct forward_spec **forwards = config_field(k, object);

	/* local_forward and remote_forward share the array: the second sees NULL. */
	free(*forwards);
	*forwards = NULL;
	*config_count(k, object) = 0;
}

static bool forward_equal(const struct forward_spec *a, const struct forward_spec *b)
{
	return a->kind == b->kind && a->listen_port == b->listen_port &&
	       a->target_port == b->target_port && strcmp(a->listen_host, b->listen_host) == 0 &&
	       strcmp(a->target_host, b->target_host) == 0;
}

static bool equal_forwards(const struct config_key *k, const void *a, const void *b)
{
	const struct forward_spec *x = *(struct forward_spec *const *)config_const_field(k, a);
	const struct forward_spec *y = *(struct forward_spec *const *)config_const_field(k, b);
	size_t n = config_const_count(k, a);

	if (n != config_const_count(k, b))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!forward_equal(&x[i], &y[i]))
			return false;
	return true;
}

/* FORWARD and HEADER: how many (forwards are shown one by one elsewhere, headers never). */
static void format_count(const struct config_key *k, const void *object, char *buf, size_t size)
{
	snprintf(buf, size, "%zu", config_const_count(k, object));
}

const struct config_type_ops config_forward_ops = {
    .set = add_forward, .free = free_forwards, .format = format_count, .equal = equal_forwards};

static int add_string(const struct config_key *k, void *object, const char *value)
{
	char ***items = config_field(k, object);
	size_t *count = config_count(k, object);
	char *copy = strdup(value), **grown = array_grow(*items, *count, sizeof(*grown));

	if (!grown) {
		free(copy);
		return -ENOMEM;
	}
	*items = grown;
	if (!copy)
		return -ENOMEM;
	(*items)[(*count)++] = copy;
	return 0;
}

/* WORDS: tunnel names separated by blanks, each appended. */
static int add_words(const struct config_key *k, void *object, const char *value,
		     const char *base_dir, char *err, size_t err_size)
{
	char word[CONFIG_NAME_MAX + 2];
	const char *p = value;

	(void)base_dir;
	while (*p) {
		size_t len;
		int r;

		p += strspn(p, " \t");
		len = strcspn(p, " \t");
		if (len == 0)
			break;
		snprintf(word, sizeof(word), "%.*s", (int)len, p);
		p += len;
		if (len > CONFIG_NAME_MAX || !config_name_valid(word)) {
			snprintf(err, err_size, "invalid tunnel name '%s' in %s", word, k->name);
			return -EINVAL;
		}
		if (k->max && *config_count(k, object) >= k->max) {
			snprintf(err, err_size, "too many names in %s (max %llu)", k->name,
				 (unsigned long long)k->max);
			return -E2BIG;
		}
		r = add_string(k, object, word);
		if (r < 0)
			return r;
	}
	return 0;
}

static void format_words(const struct config_key *k, const void *object, char *buf, size_t size)
{
	char *const *items = *(char **const *)config_const_field(k, object);
	size_t used = 0, n = config_const_count(k, object);

	for (size_t i = 0; i < n && used < size; i++) {
		int r = snprintf(buf + used, size - used, "%s%s", i ? " " : "", items[i]);

		if (r < 0)
			break;
		used += (size_t)r;
	}
}

static int add_header(const struct config_key *k, void *object, const char *value,
		      const char *base_dir, char *err, size_t err_size)
{
	(void)base_dir;
	if (!header_valid(value)) {
		snprintf(err, err_size, "invalid %s (expected 'Name: value')", k->name);
		return -EINVAL;
	}
	if (k->max && *config_count(k, object) >= k->max) {
		snprintf(err, err_size, "too many %s lines (max %llu)", k->name,
			 (unsigned long long)k->max);
		return -E2BIG;
	}
	return add_string(k, object, value);
}

/* WORDS and HEADER. */
static void free_strings(const struct config_key *k, void *object)
{
	char ***items = config_field(k, object);
	size_t *count = config_count(k, object);

	for (size_t i = 0; i < *count; i++)
		free((*items)[i]);
	free(*items);
	*items = NULL;
	*count = 0;
}

static bool equal_strings(const struct config_key *k, const void *a, const void *b)
{
	char *const *x = *(char **const *)config_const_field(k, a);
	char *const *y = *(char **const *)config_const_field(k, b);
	size_t n = config_const_count(k, a);

	if (n != config_const_count(k, b))
		return false;
	for (size_t i = 0; i < n; i++)
		if (strcmp(x[i], y[i]) != 0)
			return false;
	return true;
}

const struct config_type_ops config_words_ops = {
    .set = add_words, .free = free_strings, .format = format_words, .equal = equal_strings};
const struct config_type_ops config_header_ops = {
    .set = add_header, .free = free_strings, .format = format_count, .equal = equal_strings};

/* The whole list at once ("" and none: direct); the key is not repeatable. */
static int set_jump(const struct config_key *k, void *object, const char *value,
		    const char *base_dir, char *err, size_t err_size)
{
	struct jump_hop **hops = config_field(k, object), *parsed;
	size_t *count = config_count(k, object), n;
	char reason[160];
	int r = jumpspec_parse(value, &parsed, &n, reason, sizeof(reason));

	(void)base_dir;
	if (r == -ENOMEM)
		return r;
	if (r < 0) {
		snprintf(err, err_size, "invalid %s '%s': %s", k->name, value, reason);
		return r;
	}
	jumpspec_free(*hops, *count);
	*hops = parsed;
	*count = n;
	return 0;
}

static void free_jump(const struct config_key *k, void *object)
{
	struct jump_hop **hops = config_field(k, object);

	jumpspec_free(*hops, *config_count(k, object));
	*hops = NULL;
	*config_count(k, object) = 0;
}

static void format_jump(const struct config_key *k, const void *object, char *buf, size_t size)
{
	jumpspec_format(*(struct jump_hop *const *)config_const_field(k, object),
			config_const_count(k, object), buf, size);
}

static bool equal_jump(const struct config_key *k, const void *a, const void *b)
{
	return jumpspec_equal(
	    *(struct jump_hop *const *)config_const_field(k, a), config_const_count(k, a),
	    *(struct jump_hop *const *)config_const_field(k, b), config_const_count(k, b));
}

const struct config_type_ops config_jump_ops = {
    .set = set_jump,
    .free = free_jump,
    .format = format_jump,
    .equal = equal_jump,
    .allows_empty = true, /* "" means no bastions */
};
