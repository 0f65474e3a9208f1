#include "fwdspec.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "hostspec.h"
#include "strutil.h"

#define DEFAULT_BIND "127.0.0.1"
#define ANY_ADDRESS  "0.0.0.0"
#define HOST_MAX     (sizeof(((struct forward_spec *)0)->listen_host) - 1)
#define FIELD_MAX    300

/*
 * Splits "host:port", "[v6]:port" or (listen side only) "port" into its parts. An empty or
 * "*" listen host means every address.
 */
static int parse_endpoint(const char *field, bool listen, char *host, uint16_t *port, char *err,
			  size_t err_size)
{
	const char *side = listen ? "listen" : "target";
	const char *colon, *port_text, *host_text = field;
	size_t host_len;
	bool bracketed = false;

	if (field[0] == '[') {
		const char *close = strchr(field, ']');

		if (!close)
			return hostspec_fail(err, err_size, "missing ']' in %s address", side);
		host_text = field + 1;
		host_len = (size_t)(close - host_text);
		if (close[1] != ':')
			return hostspec_fail(err, err_size,
					     close[1] ? "expected ':' after ']' in %s address"
						      : "missing %s port",
					     side);
		port_text = close + 2;
		bracketed = true;
	} else {
		colon = strrchr(field, ':');
		if (colon && strchr(field, ':') != colon)
			return hostspec_fail(
			    err, err_size, "IPv6 %s address needs brackets, e.g. [::1]:5433", side);
		if (!colon) {
			if (!listen)
				return hostspec_fail(err, err_size,
						     "missing target port (expected host:port)");
			host_text = DEFAULT_BIND;
			host_len = strlen(DEFAULT_BIND);
			port_text = field;
		} else {
			host_len = (size_t)(colon - field);
			port_text = colon + 1;
		}
	}
	if (!*port_text)
		return hostspec_fail(err, err_size, "missing %s port", side);
	if (hostspec_parse_port(port_text, strlen(port_text), port) < 0)
		return hostspec_fail(err, err_size, "invalid %s port '%s' (1..65535)", side,
				     port_text);
	if (host_len > HOST_MAX)
		return hostspec_fail(err, err_size, "%s host too long (max %zu characters)", side,
				     HOST_MAX);
	if (!bracketed && listen && (host_len == 0 || (host_len == 1 && host_text[0] == '*'))) {
		strcpy(host, ANY_ADDRESS);
		return 0;
	}
	if (host_len == 0)
		return hostspec_fail(err, err_size, "missing %s host", side);
	memcpy(host, host_text, host_len);
	host[host_len] = '\0';
	if (bracketed) {
		if (!hostspec_is_ipv6(host))
			return hostspec_fail(err, err_size, "invalid IPv6 %s address '%s'", side,
					     host);
		return 0;
	}
	for (size_t i = 0; i < host_len; i++)
		if (!hostspec_is_hostname_char(host[i]))
			return hostspec_fail(err, err_size, "invalid %s host '%s'", side, host);
	return 0;
}

/* Copies the next whitespace-separated field into `out`; returns its length or -1 if long. */
static int next_field(const char **p, char *out, size_t size)
{
	const char *s = *p, *start;
	size_t len;

	while (strutil_is_blank(*s))
		s++;
	start = s;
	while (*s && !strutil_is_blank(*s))
		s++;
	len = (size_t)(s - start);
	*p = s;
	if (len >= size)
		return -1;
	memcpy(out, start, len);
	out[len] = '\0';
	return (int)len;
}

int fwdspec_parse(enum forward_kind kind, const char *text, struct forward_spec *ret, char *err,
		  size_t err_size)
{
	char listen[FIELD_MAX], target[FIELD_MAX], extra[FIELD_MAX];
	struct forward_spec f;
	const char *p = text;
	int r;

	memset(&f, 0, sizeof(f));
	f.kind = kind;
	if (next_field(&p, listen, sizeof(listen)) < 0 ||
	    next_field(&p, target, sizeof(target)) < 0)
		return hostspec_fail(err, err_size, "address too long");
	if (!listen[0])
		return hostspec_fail(err, err_size, "empty forward");
	if (!target[0])
		return hostspec_fail(err, err_size,
				     "missing target (expected '[bind:]port host:port')");
	if (next_field(&p, extra, sizeof(extra)) != 0)
		return hostspec_fail(err, err_size, "unexpected text after target");
	r = parse_endpoint(listen, true, f.listen_host, &f.listen_port, err, err_size);
	if (r < 0)
		return r;
	r = parse_endpoint(target, false, f.target_host, &f.target_port, err, err_size);
	if (r < 0)
		return r;
	*ret = f;
	return 0;
}

static void format_endpoint(const char *host, uint16_t port, char *buf, size_t size)
{
	if (strchr(host, ':'))
		snprintf(buf, size, "[%s]:%u", host, (unsigned)port);
	else
		snprintf(buf, size, "%s:%u", host, (unsigned)port);
}

void fwdspec_format_listen(const struct forward_spec *f, char *buf, size_t size)
{
	format_endpoint(f->listen_host, f->listen_port, buf, size);
}

void fwdspec_format_target(const struct forward_spec *f, char *buf, size_t size)
{
	format_endpoint(f->target_host, f->target_port, buf, size);
}
