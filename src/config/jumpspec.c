#include "jumpspec.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hostspec.h"
#include "strutil.h"

#define DEFAULT_PORT 22
#define HOST_MAX     255
#define USER_MAX     127

/* Printable ASCII but for the separators of the list itself; '@' is allowed (the last one
 * ends the user, as in "first.last@corp@bastion"). */
static bool is_user_char(char c)
{
	return c > ' ' && c < 0x7f && c != ',' && c != '[' && c != ']';
}

/* One hop of `len` bytes at `s`, blanks already trimmed; `n` counts from 1 for messages. */
static int parse_hop(const char *s, size_t len, size_t n, struct jump_hop *ret, char *err,
		     size_t err_size)
{
	char text[HOST_MAX + USER_MAX + 16], host[HOST_MAX + 1];
	const char *at, *rest, *host_text, *port_text = NULL;
	size_t user_len = 0, host_len;
	struct in6_addr addr6;
	uint16_t port = DEFAULT_PORT;
	char *user = NULL;

	if (len == 0)
		return hostspec_fail(err, err_size, "hop %zu is empty", n);
	if (len >= sizeof(text))
		return hostspec_fail(err, err_size, "hop %zu is too long", n);
	memcpy(text, s, len);
	text[len] = '\0';
	at = strrchr(text, '@');
	rest = at ? at + 1 : text;
	if (at) {
		user_len = (size_t)(at - text);
		if (user_len == 0)
			return hostspec_fail(err, err_size, "hop %zu: empty user before '@'", n);
		if (user_len > USER_MAX)
			return hostspec_fail(err, err_size,
					     "hop %zu: user too long (max %d characters)", n,
					     USER_MAX);
		for (size_t i = 0; i < user_len; i++)
			if (!is_user_char(text[i]))
				return hostspec_fail(err, err_size, "hop %zu: invalid user '%.*s'",
						     n, (int)user_len, text);
	}
	if (rest[0] == '[') {
		const char *close = strchr(rest, ']');

		if (!close)
			return hostspec_fail(err, err_size,
					     "hop %zu: missing ']' after IPv6 address", n);
		host_text = rest + 1;
		host_len = (size_t)(close - host_text);
		if (close[1] == ':')
			port_text = close + 2;
		else if (close[1])
			return hostspec_fail(err, err_size, "hop %zu: expected ':' after ']'", n);
		if (host_len > HOST_MAX)
			return hostspec_fail(err, err_size, "hop %zu: host too long", n);
		memcpy(host, host_text, host_len);
		host[host_len] = '\0';
		if (inet_pton(AF_INET6, host, &addr6) != 1)
			return hostspec_fail(err, err_size, "hop %zu: invalid IPv6 address '%s'", n,
					     host);
	} else {
		const char *colon = strchr(rest, ':');

		if (colon && strchr(colon + 1, ':'))
			return hostspec_fail(
			    err, err_size,
			    "hop %zu: IPv6 address needs brackets, e.g. [fd00::1]:22", n);
		host_text = rest;
		host_len = colon ? (size_t)(colon - rest) : strlen(rest);
		if (colon)
			port_text = colon + 1;
		if (host_len == 0)
			return hostspec_fail(err, err_size, "hop %zu: missing host", n);
		if (host_len > HOST_MAX)
			return hostspec_fail(err, err_size,
					     "hop %zu: host too long (max %d characters)", n,
					     HOST_MAX);
		memcpy(host, host_text, host_len);
		host[host_len] = '\0';
		for (size_t i = 0; i < host_len; i++)
			if (!hostspec_is_hostname_char(host[i]))
				return hostspec_fail(err, err_size, "hop %zu: invalid host '%s'", n,
						     host);
	}
	if (port_text && hostspec_parse_port(port_text, strlen(port_text), &port) < 0)
		return hostspec_fail(err, err_size, "hop %zu: invalid port '%s' (1..65535)", n,
				     port_text);
	if (at && !(user = strndup(text, user_len)))
		return -ENOMEM;
	ret->user = user;
	ret->host = strdup(host);
	ret->port = port;
	if (!ret->host) {
		free(user);
		return -ENOMEM;
	}
	return 0;
}

void jumpspec_free(struct jump_hop *hops, size_t n)
{
	if (!hops)
		return;
	for (size_t i = 0; i < n; i++) {
		free(hops[i].user);
		free(hops[i].host);
	}
	free(hops);
}

int jumpspec_parse(const char *text, struct jump_hop **ret_hops, size_t *ret_n, char *err,
		   size_t err_size)
{
	struct jump_hop *hops;
	const char *p = text;
	size_t n = 0;
	int r;

	while (strutil_is_blank(*p))
		p++;
	if (!*p || strcmp(p, "none") == 0) {
		*ret_hops = NULL;
		*ret_n = 0;
		return 0;
	}
	hops = calloc(JUMP_HOPS_MAX, sizeof(*hops));
	if (!hops)
		return -ENOMEM;
	for (;;) {
		size_t len = strcspn(p, ",");
		const char *next = p[len] == ',' ? p + len + 1 : NULL;

		while (len > 0 && strutil_is_blank(p[len - 1]))
			len--;
		if (n == JUMP_HOPS_MAX) {
			r = -E2BIG;
			snprintf(err, err_size, "too many hops (max %d)", JUMP_HOPS_MAX);
			goto fail;
		}
		r = parse_hop(p, len, n + 1, &hops[n], err, err_size);
		if (r < 0)
			goto fail;
		n++;
		if (!next)
			break;
		p = next;
		while (strutil_is_blank(*p))
			p++;
	}
	*ret_hops = hops;
	*ret_n = n;
	return 0;
fail:
	jumpspec_free(hops, n);
	return r;
}

void jumpspec_format_hop(const struct jump_hop *hop, char *buf, size_t size)
{
	bool v6 = strchr(hop->host, ':') != NULL;

	snprintf(buf, size, "%s%s%s%s%s:%u", hop->user ? hop->user : "", hop->user ? "@" : "",
		 v6 ? "[" : "", hop->host, v6 ? "]" : "", (unsigned)hop->port);
}

void jumpspec_format(const struct jump_hop *hops, size_t n, char *buf, size_t size)
{
	size_t used = 0;

	if (size == 0)
		return;
	buf[0] = '\0';
	for (size_t i = 0; i < n && used + 1 < size; i++) {
		if (i > 0)
			buf[used++] = ',';
		jumpspec_format_hop(&hops[i], buf + used, size - used);
		used += strlen(buf + used);
	}
	buf[used < size ? used : size - 1] = '\0';
}

bool jumpspec_equal(const struct jump_hop *a, size_t n_a, const struct jump_hop *b, size_t n_b)
{
	if (n_a != n_b)
		return false;
	for (size_t i = 0; i < n_a; i++)
		if (a[i].port != b[i].port || !strutil_equal(a[i].host, b[i].host) ||
		    !strutil_equal(a[i].user, b[i].user))
			return false;
	return true;
}
