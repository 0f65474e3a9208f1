#include "config_table.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "config_internal.h"
#include "duration.h"
#include "filedigest.h"
#include "hostspec.h"
#include "log.h"
#include "strutil.h"

/*
 * What each value type does: parse, free, format and compare the field a key points to,
 * one operations table per type beside its functions (the list types are in
 * config_lists.c). config_types[] indexes them by type; the functions at the end apply
 * them key by key.
 */

static const char *const log_level_names[] = {"debug", "info", "notice", "warning", "err"};

static bool has_space(const char *s)
{
	for (; *s; s++)
		if (strutil_is_blank(*s))
			return true;
	return false;
}

bool config_name_valid(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || len > CONFIG_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!hostspec_is_hostname_char(name[i]))
			return false;
	return true;
}

static bool host_valid(const char *host)
{
	struct in6_addr addr;

	if (strchr(host, ':'))
		return inet_pton(AF_INET6, host, &addr) == 1;
	for (const char *p = host; *p; p++)
		if (!hostspec_is_hostname_char(*p))
			return false;
	return true;
}

/* "https://" or "http://", then a host that does not start with '/'. */
static bool url_valid(const char *url)
{
	const char *rest;

	if (strncmp(url, "https://", 8) == 0)
		rest = url + 8;
	else if (strncmp(url, "http://", 7) == 0)
		rest = url + 7;
	else
		return false;
	return *rest && *rest != '/' && !has_space(url);
}

static int parse_number(const char *s, uint64_t *ret)
{
	uint64_t v = 0;

	if (!*s)
		return -EINVAL;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
			return -ERANGE;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*ret = v;
	return 0;
}

/* 33554432 -> "32M": the largest binary unit that divides the size exactly. */
static void size_format(uint64_t bytes, char *buf, size_t size)
{
	static const char suffixes[] = "KMG";
	int i = -1;

	while (i < 2 && bytes >= KIB && bytes % KIB == 0) {
		bytes /= KIB;
		i++;
	}
	if (i < 0)
		snprintf(buf, size, "%llu", (unsigned long long)bytes);
	else
		snprintf(buf, size, "%llu%c", (unsigned long long)bytes, suffixes[i]);
}

static void number_format(uint64_t v, char *buf, size_t size)
{
	snprintf(buf, size, "%llu", (unsigned long long)v);
}

static int replace_string(char **field, const char *value)
{
	char *copy = strdup(value);

	if (!copy)
		return -ENOMEM;
	free(*field);
	*field = copy;
	return 0;
}

/* STRING and TEXT: at most k->max bytes; STRING without blanks. */
static int set_text(const struct config_key *k, void *object, const char *value,
		    const char *base_dir, char *err, size_t err_size)
{
	(void)base_dir;
	if (k->type == CONFIG_TYPE_STRING && has_space(value)) {
		snprintf(err, err_size, "invalid %s '%s' (no spaces allowed)", k->name, value);
		return -EINVAL;
	}
	if (k->max && strlen(value) > k->max) {
		snprintf(err, err_size, "%s too long (max %llu characters)", k->name,
			 (unsigned long long)k->max);
		return -EINVAL;
	}
	return replace_string(config_field(k, object), value);
}

static int set_host(const struct config_key *k, void *object, const char *value,
		    const char *base_dir, char *err, size_t err_size)
{
	(void)base_dir;
	if (strlen(value) > k->max || !host_valid(value)) {
		snprintf(err, err_size, "invalid host name '%s' for %s", value, k->name);
		return -EINVAL;
	}
	return replace_string(config_field(k, object), value);
}

static int set_url(const struct config_key *k, void *object, const char *value,
		   const char *base_dir, char *err, size_t err_size)
{
	(void)base_dir;
	if (!url_valid(value)) {
		snprintf(err, err_size, "invalid %s (expected http:// or https:// and a host)",
			 k->name);
		return -EINVAL;
	}
	return replace_string(config_field(k, object), value);
}

static int set_path(const struct config_key *k, void *object, const char *value,
		    const char *base_dir, char *err, size_t err_size)
{
	char **field = config_field(k, object), *path;

	if (value[0] == '~') {
		snprintf(err, err_size, "%s: '~' is not expanded, use an absolute path", k->name);
		return -EINVAL;
	}
	if (value[0] == '/' || !base_dir) {
		path = strdup(value);
	} else if (asprintf(&path, "%s/%s", base_dir, value) < 0) {
		path = NULL;
	}
	if (!path)
		return -ENOMEM;
	if (k->max && strlen(path) > k->max) {
		snprintf(err, err_size, "%s path too long (max %llu characters)", k->name,
			 (unsigned long long)k->max);
		free(path);
		return -EINVAL;
	}
	free(*field);
	*field = path;
	return 0;
}

static void free_string(const struct config_key *k, void *object)
{
	char **field = config_field(k, object);

	free(*field);
	*field = NULL;
}

static void format_string(const struct config_key *k, const void *object, char *buf, size_t size)
{
	const char *s = *(char *const *)config_const_field(k, object);

	snprintf(buf, size, "%s", s ? s : "");
}

static bool equal_string(const struct config_key *k, const void *a, const void *b)
{
	return strutil_equal(*(char *const *)config_const_field(k, a),
			     *(char *const *)config_const_field(k, b));
}

static const struct config_type_ops string_ops = {
    .set = set_text, .free = free_string, .format = format_string, .equal = equal_string};
static const struct config_type_ops host_ops = {
    .set = set_host, .free = free_string, .format = format_string, .equal = equal_string};
static const struct config_type_ops url_ops = {
    .set = set_url, .free = free_string, .format = format_string, .equal = equal_string};
static const struct config_type_ops path_ops = {
    .set = set_path, .free = free_string, .format = format_string, .equal = equal_string};

static int set_port(const struct config_key *k, void *object, const char *value,
		    const char *base_dir, char *err, size_t err_size)
{
	uint64_t v;

	(void)base_dir;
	if (parse_number(value, &v) < 0 || v < k->min || v > k->max) {
		snprintf(err, err_size, "invalid port '%s' for %s (1..65535)", value, k->name);
		return -EINVAL;
	}
	*(uint16_t *)config_field(k, object) = (uint16_t)v;
	return 0;
}

static void format_port(const struct config_key *k, const void *object, char *buf, size_t size)
{
	snprintf(buf, size, "%u", (unsigned)*(const uint16_t *)config_const_field(k, object));
}

static bool equal_port(const struct config_key *k, const void *a, const void *b)
{
	return *(const uint16_t *)config_const_field(k, a) ==
	       *(const uint16_t *)config_const_field(k, b);
}

static const struct config_type_ops port_ops = {
    .set = set_port, .format = format_port, .equal = equal_port};

static int set_uint(const struct config_key *k, void *object, const char *value,
		    const char *base_dir, char *err, size_t err_size)
{
	uint64_t v;
	int r = parse_number(value, &v);

	(void)base_dir;
	if (r == -EINVAL) {
		snprintf(err, err_size, "invalid number '%s' for %s", value, k->name);
		return r;
	}
	if (r < 0 || v < k->min || v > k->max) {
		snprintf(err, err_size, "%s must be between %llu and %llu (got %s)", k->name,
			 (unsigned long long)k->min, (unsigned long long)k->max, value);
		return -ERANGE;
	}
	*(unsigned *)config_field(k, object) = (unsigned)v;
	return 0;
}

static void format_uint(const struct config_key *k, const void *object, char *buf, size_t size)
{
	snprintf(buf, size, "%u", *(const unsigned *)config_const_field(k, object));
}

static bool equal_uint(const struct config_key *k, const void *a, const void *b)
{
	return *(const unsigned *)config_const_field(k, a) ==
	       *(const unsigned *)config_const_field(k, b);
}

static const struct config_type_ops uint_ops = {
    .set = set_uint, .format = format_uint, .equal = equal_uint, .format_limit = number_format};

static int set_bool(const struct config_key *k, void *object, const char *value,
		    const char *base_dir, char *err, size_t err_size)
{
	(void)base_dir;
	if (strcmp(value, "yes") == 0 || strcmp(value, "no") == 0) {
		*(bool *)config_field(k, object) = value[0] == 'y';
		return 0;
	}
	snprintf(err, err_size, "invalid value '%s' for %s (expected yes or no)", value, k->name);
	return -EINVAL;
}

static void format_bool(const struct config_key *k, const void *object, char *buf, size_t size)
{
	snprintf(buf, size, "%s", *(const bool *)config_const_field(k, object) ? "yes" : "no");
}

static bool equal_bool(const struct config_key *k, const void *a, const void *b)
{
	return *(const bool *)config_const_field(k, a) == *(const bool *)config_const_field(k, b);
}

static const struct config_type_ops bool_ops = {
    .set = set_bool, .format = format_bool, .equal = equal_bool};

static int set_duration(const struct config_key *k, void *object, const char *value,
			const char *base_dir, char *err, size_t err_size)
{
	char limit[32];
	uint64_t ms;
	int r = duration_parse(value, &ms);

	(void)base_dir;
	if (r == -ERANGE) {
		snprintf(err, err_size, "duration '%s' for %s is too large", value, k->name);
		return r;
	}
	if (r < 0) {
		snprintf(err, err_size, "invalid duration '%s' for %s", value, k->name);
		return r;
	}
	if (ms < k->min) {
		duration_format(k->min, limit, sizeof(limit));
		snprintf(err, err_size, "%s must be at least %s (got %s)", k->name, limit, value);
		return -ERANGE;
	}
	if (k->max && ms > k->max) {
		duration_format(k->max, limit, sizeof(limit));
		snprintf(err, err_size, "%s must be at most %s (got %s)", k->name, limit, value);
		return -ERANGE;
	}
	*(uint64_t *)config_field(k, object) = ms;
	return 0;
}

static void format_duration(const struct config_key *k, const void *object, char *buf, size_t size)
{
	duration_format(*(const uint64_t *)config_const_field(k, object), buf, size);
}

/* DURATION and SIZE. */
static bool equal_u64(const struct config_key *k, const void *a, const void *b)
{
	return *(const uint64_t *)config_const_field(k, a) ==
	       *(const uint64_t *)config_const_field(k, b);
}

static const struct config_type_ops duration_ops = {
    .set = set_duration,
    .format = format_duration,
    .equal = equal_u64,
    .format_limit = duration_format,
};

/* "32M" -> 33554432: a number with an optional binary K, M or G suffix. */
static int set_size(const struct config_key *k, void *object, const char *value,
		    const char *base_dir, char *err, size_t err_size)
{
	static const struct {
		char suffix;
		uint64_t unit;
	} units[] = {{'K', KIB}, {'M', MIB}, {'G', GIB}};
	char digits[32], lo[32], hi[32];
	size_t len = strlen(value);
	uint64_t unit = 1, v;
	int r;

	(void)base_dir;
	if (len == 0 || len >= sizeof(digits)) {
		snprintf(err, err_size, "invalid size '%s' for %s", value, k->name);
		return -EINVAL;
	}
	memcpy(digits, value, len + 1);
	for (size_t i = 0; i < N_ELEMENTS(units); i++) {
		if (digits[len - 1] == units[i].suffix ||
		    digits[len - 1] == units[i].suffix - 'A' + 'a') {
			unit = units[i].unit;
			digits[--len] = '\0';
		}
	}
	r = parse_number(digits, &v);
	if (r == -EINVAL) {
		snprintf(err, err_size, "invalid size '%s' for %s (expected e.g. 32M)", value,
			 k->name);
		return r;
	}
	if (r < 0 || v > UINT64_MAX / unit || v * unit < k->min || v * unit > k->max) {
		size_format(k->min, lo, sizeof(lo));
		size_format(k->max, hi, sizeof(hi));
		snprintf(err, err_size, "%s must be between %s and %s (got %s)", k->name, lo, hi,
			 value);
		return -ERANGE;
	}
	*(uint64_t *)config_field(k, object) = v * unit;
	return 0;
}

static void format_size(const struct config_key *k, const void *object, char *buf, size_t size)
{
	size_format(*(const uint64_t *)config_const_field(k, object), buf, size);
}

static const struct config_type_ops size_ops = {
    .set = set_size, .format = format_size, .equal = equal_u64, .format_limit = size_format};

/* Writes "a, b or c" for the choices of an enum. */
static void choices_text(const char *const *names, size_t n, char *buf, size_t size)
{
	size_t used = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < n && used < size; i++) {
		const char *sep = i == 0 ? "" : i + 1 == n ? " or " : ", ";
		int r = snprintf(buf + used, size - used, "%s%s", sep, names[i]);

		if (r < 0)
			return;
		used += (size_t)r;
	}
}

static int set_enum(const struct config_key *k, void *object, const char *value,
		    const char *base_dir, char *err, size_t err_size)
{
	const char *names[8];
	char expected[128];
	size_t n = 0;

	(void)base_dir;
	for (const struct config_choice *c = k->choices; c->name; c++) {
		if (strcmp(c->name, value) == 0) {
			*(int *)config_field(k, object) = c->value;
			return 0;
		}
		if (n < N_ELEMENTS(names))
			names[n++] = c->name;
	}
	choices_text(names, n, expected, sizeof(expected));
	snprintf(err, err_size, "invalid value '%s' for %s (expected %s)", value, k->name,
		 expected);
	return -EINVAL;
}

static void format_enum(const struct config_key *k, const void *object, char *buf, size_t size)
{
	int value = *(const int *)config_const_field(k, object);

	for (const struct config_choice *c = k->choices; c->name; c++)
		if (c->value == value)
			snprintf(buf, size, "%s", c->name);
}

/* ENUM and LOG_LEVEL. */
static bool equal_int(const struct config_key *k, const void *a, const void *b)
{
	return *(const int *)config_const_field(k, a) == *(const int *)config_const_field(k, b);
}

static const struct config_type_ops enum_ops = {
    .set = set_enum, .format = format_enum, .equal = equal_int};

static int set_log_level(const struct config_key *k, void *object, const char *value,
			 const char *base_dir, char *err, size_t err_size)
{
	char expected[128];
	int level = log_level_from_str(value);

	(void)base_dir;
	if (level < 0) {
		choices_text(log_level_names, N_ELEMENTS(log_level_names), expected,
			     sizeof(expected));
		snprintf(err, err_size, "invalid value '%s' for %s (expected %s)", value, k->name,
			 expected);
		return -EINVAL;
	}
	*(int *)config_field(k, object) = level;
	return 0;
}

static void format_log_level(const struct config_key *k, const void *object, char *buf, size_t size)
{
	snprintf(buf, size, "%s", log_level_str(*(const int *)config_const_field(k, object)));
}

static const struct config_type_ops log_level_ops = {
    .set = set_log_level, .format = format_log_level, .equal = equal_int};

/* [include] files = GLOB is read by the loader, never set. */
static const struct config_type_ops include_ops = {0};

const struct config_type_ops *const config_types[CONFIG_TYPE_COUNT] = {
    [CONFIG_TYPE_STRING] = &string_ops,
    [CONFIG_TYPE_TEXT] = &string_ops,
    [CONFIG_TYPE_HOST] = &host_ops,
    [CONFIG_TYPE_URL] = &url_ops,
    [CONFIG_TYPE_PATH] = &path_ops,
    [CONFIG_TYPE_PORT] = &port_ops,
    [CONFIG_TYPE_UINT] = &uint_ops,
    [CONFIG_TYPE_BOOL] = &bool_ops,
    [CONFIG_TYPE_DURATION] = &duration_ops,
    [CONFIG_TYPE_SIZE] = &size_ops,
    [CONFIG_TYPE_ENUM] = &enum_ops,
    [CONFIG_TYPE_LOG_LEVEL] = &log_level_ops,
    [CONFIG_TYPE_FORWARD] = &config_forward_ops,
    [CONFIG_TYPE_WORDS] = &config_words_ops,
    [CONFIG_TYPE_HEADER] = &config_header_ops,
    [CONFIG_TYPE_JUMP] = &config_jump_ops,
    [CONFIG_TYPE_INCLUDE] = &include_ops,
};

int config_key_set(const struct config_key *k, void *object, const char *value,
		   const char *base_dir, char *err, size_t err_size)
{
	const struct config_type_ops *ops = config_types[k->type];

	if (!ops->allows_empty && value[0] == '\0') {
		snprintf(err, err_size, "empty value for %s", k->name);
		return -EINVAL;
	}
	if (!ops->set) {
		snprintf(err, err_size, "%s cannot be set here", k->name);
		return -EINVAL;
	}
	return ops->set(k, object, value, base_dir, err, err_size);
}

static void key_free(const struct config_key *k, void *object)
{
	if (config_types[k->type]->free)
		config_types[k->type]->free(k, object);
}

void config_section_free(enum config_section section, void *object)
{
	const struct config_section_info *s = &config_sections[section];

	if (!object)
		return;
	for (size_t i = 0; i < s->n_keys; i++)
		key_free(&s->keys[i], object);
}

int config_section_defaults(enum config_section section, void *object)
{
	const struct config_section_info *s = &config_sections[section];
	char err[256];

	for (size_t i = 0; i < s->n_keys; i++) {
		const struct config_key *k = &s->keys[i];
		int r;

		if (!k->default_value)
			continue;
		r = config_key_set(k, object, k->default_value, NULL, err, sizeof(err));
		if (r < 0)
			return r;
	}
	return 0;
}

void config_key_format(const struct config_key *k, const void *object, char *buf, size_t size)
{
	if (size == 0)
		return;
	buf[0] = '\0';
	if (config_types[k->type]->format)
		config_types[k->type]->format(k, object, buf, size);
}

bool config_key_equal(const struct config_key *k, const void *a, const void *b)
{
	if (!config_types[k->type]->equal)
		return true;
	return config_types[k->type]->equal(k, a, b);
}

bool config_key_contents_equal(const struct config_key *k, const void *a, const void *b)
{
	const struct file_digest *da, *db;

	if (!(k->flags & CONFIG_KEY_CONTENTS))
		return true;
	da = (const void *)((const char *)a + k->digest_offset);
	db = (const void *)((const char *)b + k->digest_offset);
	return file_digest_equal(da, db);
}

/* The same for every type: the default set in a scratch object compares equal. */
bool config_key_is_default(const struct config_key *k, const void *object)
{
	/* Big enough and aligned for any section struct. */
	union {
		struct config c;
		struct tunnel_config t;
		struct alert_config a;
	} scratch;
	char err[256];
	bool same;

	if (!k->default_value)
		return false;
	memset(&scratch, 0, sizeof(scratch));
	if (config_key_set(k, &scratch, k->default_value, NULL, err, sizeof(err)) < 0)
		return false;
	same = config_key_equal(k, object, &scratch);
	key_free(k, &scratch);
	return same;
}
