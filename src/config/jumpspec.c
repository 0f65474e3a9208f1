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

/* Printable ASCII but for the separators of the list itself; '@' is allowed (the last one
 * ends the user, as in "first.last@corp@bastion"). */
static bool is_user_char(char c)
{
	return c > ' ' && c < 0x7f && c != ',' && c != '[' && c != ']';
}

/* The user of hop `n` is the `len` bytes at `text` (before its last '@'). */
static int check_user(const char *text, size_t len, size_t n, char *err, size_t err_size)
{
	if (len == 0)
		return hostspec_fail(err, err_size, "hop %zu: empty user before '@'", n);
	if (len > HOSTSPEC_USER_MAX)
		return hostspec_fail(err, err_size, "hop %zu: user too long (max %d characters)", n,
				     HOSTSPEC_USER_MAX);
	for (size_t i = 0; i < len; i++)
		if (!is_user_char(text[i]))
			return hostspec_fail(err, err_size, "hop %zu: invalid user '%.*s'", n,
					     (int)len, text);
	return 0;
}

/* The host of hop `n` into `host`: an IP address when it was bracketed (IPv6, or IPv4 as
 * `ssh -G` prints every address in a ProxyJump: ops@[10.0.0.1]), else a name. */
static int parse_host(const struct hostspec_parts *p, size_t n, char host[HOSTSPEC_HOST_MAX + 1],
		      char *err, size_t err_size)
{
	struct in6_addr addr6;
	struct in_addr addr4;

	if (p->bracketed) {
		if (p->host_len > HOSTSPEC_HOST_MAX)
			return hostspec_fail(err, err_size, "hop %zu: host too long", n);
		memcpy(host, p->host, p->host_len);
		host[p->host_len] = '\0';
		if (inet_pton(AF_INET6, host, &addr6) != 1 && inet_pton(AF_INET, host, &addr4) != 1)
			return hostspec_fail(err, err_size, "hop %zu: invalid IP address '%s'", n,
					     host);
		return 0;
	}
	if (p->host_len == 0)
		return hostspec_fail(err, err_size, "hop %zu: missing host", n);
	if (p->host_len > HOSTSPEC_HOST_MAX)
		return hostspec_fail(err, err_size, "hop %zu: host too long (max %d characters)", n,
				     HOSTSPEC_HOST_MAX);
	memcpy(host, p->host, p->host_len);
	host[p->host_len] = '\0';
	for (size_t i = 0; i < p->host_len; i++)
		if (!hostspec_is_hostname_char(host[i]))
			return hostspec_fail(err, err_size, "hop %zu: invalid host '%s'", n, host);
	return 0;
}

/* "host", "host:port", "[v6]" or "[v6]:port" of hop `n`; the port defaults to 22. */
static int parse_address(const char *text, size_t n, char host[HOSTSPEC_HOST_MAX + 1],
			 uint16_t *port, char *err, size_t err_size)
{
	struct hostspec_parts p;
	int r;

	switch (hostspec_split(text, &p)) {
	case HOSTSPEC_SPLIT_NO_CLOSE:
		return hostspec_fail(err, err_size, "hop %zu: missing ']' after IPv6 address", n);
	case HOSTSPEC_SPLIT_AFTER_CLOSE:
		return hostspec_fail(err, err_size, "hop %zu: expected ':' after ']'", n);
	case HOSTSPEC_SPLIT_BARE_IPV6:
		return hostspec_fail(err, err_size,
				     "hop %zu: IPv6 address needs brackets, e.g. [fd00::1]:22", n);
	case HOSTSPEC_SPLIT_OK:
		break;
	}
	r = parse_host(&p, n, host, err, err_size);
	if (r < 0)
		return r;
	*port = DEFAULT_PORT;
	if (p.port && hostspec_parse_port(p.port, strlen(p.port), port) < 0)
		return hostspec_fail(err, err_size, "hop %zu: invalid port '%s' (1..65535)", n,
				     p.port);
	return 0;
}

/* One hop of `len` bytes at `s`, blanks already trimmed; `n` counts from 1 for messages. */
static int parse_hop(const char *s, size_t len, size_t n, struct jump_hop *ret, char *err,
		     size_t err_size)
{
	char text[HOSTSPEC_HOST_MAX + HOSTSPEC_USER_MAX + 16], host[HOSTSPEC_HOST_MAX + 1];
	const char *at;
	uint16_t port;
	char *user = NULL;
	int r;

	if (len == 0)
		return hostspec_fail(err, err_size, "hop %zu is empty", n);
	if (len >= sizeof(text))
		return hostspec_fail(err, err_size, "hop %zu is too long", n);
	memcpy(text, s, len);
	text[len] = '\0';
	at = strrchr(text, '@');
	r = at ? check_user(text, (size_t)(at - text), n, err, err_size) : 0;
	if (r < 0)
		return r;
	r = parse_address(at ? at + 1 : text, n, host, &port, err, err_size);
	if (r < 0)
		return r;
	if (at && !(user = strndup(text, (size_t)(at - text))))
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
	int n = snprintf(buf, size, "%s%s", hop->user ? hop->user : "", hop->user ? "@" : "");

	if (n >= 0 && (size_t)n < size)
		hostspec_format(hop->host, hop->port, buf + n, size - (size_t)n);
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
