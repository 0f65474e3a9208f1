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
#define FIELD_MAX    300

/* Cuts "host:port", "[v6]:port" or (listen side only) "port" into its parts. */
static int split_endpoint(const char *field, bool listen, struct hostspec_parts *ret, char *err,
			  size_t err_size)
{
	const char *side = listen ? "listen" : "target";

	switch (hostspec_split(field, ret)) {
	case HOSTSPEC_SPLIT_NO_CLOSE:
		return hostspec_fail(err, err_size, "missing ']' in %s address", side);
	case HOSTSPEC_SPLIT_AFTER_CLOSE:
		return hostspec_fail(err, err_size, "expected ':' after ']' in %s address", side);
	case HOSTSPEC_SPLIT_BARE_IPV6:
		return hostspec_fail(err, err_size,
				     "IPv6 %s address needs brackets, e.g. [::1]:5433", side);
	case HOSTSPEC_SPLIT_OK:
		break;
	}
	if (!ret->port && !ret->bracketed) {
		if (!listen)
			return hostspec_fail(err, err_size,
					     "missing target port (expected host:port)");
		*ret = (struct hostspec_parts){
		    .host = DEFAULT_BIND, .host_len = strlen(DEFAULT_BIND), .port = field};
	}
	return 0;
}

/*
 * Parses "host:port", "[v6]:port" or (listen side only) "port" into host and port. An empty
 * or "*" listen host means every address.
 */
static int parse_endpoint(const char *field, bool listen, char *host, uint16_t *port, char *err,
			  size_t err_size)
{
	const char *side = listen ? "listen" : "target";
	struct hostspec_parts p;
	int r = split_endpoint(field, listen, &p, err, err_size);

	if (r < 0)
		return r;
	if (!p.port || !*p.port)
		return hostspec_fail(err, err_size, "missing %s port", side);
	if (hostspec_parse_port(p.port, strlen(p.port), port) < 0)
		return hostspec_fail(err, err_size, "invalid %s port '%s' (1..65535)", side,
				     p.port);
	if (p.host_len > HOSTSPEC_HOST_MAX)
		return hostspec_fail(err, err_size, "%s host too long (max %d characters)", side,
				     HOSTSPEC_HOST_MAX);
	if (!p.bracketed && listen && (p.host_len == 0 || (p.host_len == 1 && p.host[0] == '*'))) {
		strcpy(host, ANY_ADDRESS);
		return 0;
	}
	if (p.host_len == 0)
		return hostspec_fail(err, err_size, "missing %s host", side);
	memcpy(host, p.host, p.host_len);
	host[p.host_len] = '\0';
	if (p.bracketed) {
		if (!hostspec_is_ipv6(host))
			return hostspec_fail(err, err_size, "invalid IPv6 %s address '%s'", side,
					     host);
		return 0;
	}
	for (size_t i = 0; i < p.host_len; i++)
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

void fwdspec_format_listen(const struct forward_spec *f, char *buf, size_t size)
{
	hostspec_format(f->listen_host, f->listen_port, buf, size);
}

void fwdspec_format_target(const struct forward_spec *f, char *buf, size_t size)
{
	hostspec_format(f->target_host, f->target_port, buf, size);
}
