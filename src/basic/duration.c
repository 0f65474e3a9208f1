#include "duration.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* Largest first: a duration names each unit at most once, in this order. */
static const struct duration_unit {
	const char *suffix;
	uint64_t ms;
} units[] = {
    {"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1},
};

#define N_UNITS (sizeof(units) / sizeof(units[0]))
/* Indexes of units[] the parser names. */
#define UNIT_SECONDS 3
#define UNIT_MS	     4

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* Matches the unit at `p` ("ms" before "m"); returns its index or -1. */
static int unit_match(const char *p, size_t *ret_len)
{
	if (p[0] == 'm' && p[1] == 's') {
		*ret_len = 2;
		return UNIT_MS;
	}
	for (int i = 0; i < UNIT_MS; i++) {
		if (p[0] == units[i].suffix[0]) {
			*ret_len = 1;
			return i;
		}
	}
	return -1;
}

int duration_parse(const char *text, uint64_t *ret_ms)
{
	const char *p = text;
	uint64_t total = 0;
	bool overflow = false, bare = true;
	int last_unit = -1;

	if (!text || !*text)
		return -EINVAL;
	while (*p) {
		uint64_t n = 0, part;
		size_t len;
		int u;

		if (!is_digit(*p))
			return -EINVAL;
		for (; is_digit(*p); p++) {
			unsigned d = (unsigned)(*p - '0');

			if (n > (UINT64_MAX - d) / 10)
				overflow = true;
			else
				n = n * 10 + d;
		}
		if (!*p) {
			/* A bare number means seconds; "1m30" is not allowed. */
			if (!bare)
				return -EINVAL;
			u = UNIT_SECONDS;
		} else {
			u = unit_match(p, &len);
			if (u < 0 || u <= last_unit)
				return -EINVAL;
			p += len;
			bare = false;
		}
		last_unit = u;
		if (n > UINT64_MAX / units[u].ms)
			overflow = true;
		part = n * units[u].ms;
		if (total > UINT64_MAX - part)
			overflow = true;
		total += part;
	}
	if (overflow)
		return -ERANGE;
	*ret_ms = total;
	return 0;
}

static void format_units(uint64_t ms, char *buf, size_t size)
{
	size_t used = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < N_UNITS && ms > 0; i++) {
		uint64_t n = ms / units[i].ms;
		int r;

		if (n == 0)
			continue;
		ms -= n * units[i].ms;
		r = snprintf(buf + used, size - used, "%llu%s", (unsigned long long)n,
			     units[i].suffix);
		if (r < 0 || (size_t)r >= size - used)
			return;
		used += (size_t)r;
	}
}

void duration_format(uint64_t ms, char *buf, size_t size)
{
	char split[64], plain[32];

	if (size == 0)
		return;
	if (ms == 0) {
		snprintf(buf, size, "0");
		return;
	}
	/* "1s500ms" is longer than "1500ms", "1h1ms" shorter than "3600001ms". */
	format_units(ms, split, sizeof(split));
	snprintf(plain, sizeof(plain), "%llums", (unsigned long long)ms);
	snprintf(buf, size, "%s", strlen(plain) < strlen(split) ? plain : split);
}
