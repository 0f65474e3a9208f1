#include "hostspec.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int hostspec_fail(char *err, size_t err_size, const char *fmt, ...)
{
	va_list ap;

	if (err && err_size > 0) {
		va_start(ap, fmt);
		vsnprintf(err, err_size, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

bool hostspec_is_hostname_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '-' || c == '_';
}

bool hostspec_is_ipv6(const char *s)
{
	char copy[64];
	struct in6_addr addr;
	size_t len = strcspn(s, "%");

	if (len >= sizeof(copy))
		return false;
	memcpy(copy, s, len);
	copy[len] = '\0';
	if (s[len] == '%') {
		if (!s[len + 1])
			return false;
		for (const char *z = s + len + 1; *z; z++)
			if (!hostspec_is_hostname_char(*z))
				return false;
	}
	return inet_pton(AF_INET6, copy, &addr) == 1;
}

int hostspec_parse_port(const char *s, size_t len, uint16_t *ret)
{
	unsigned long v = 0;

	if (len == 0 || len > 5)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	if (v < 1 || v > 65535)
		return -EINVAL;
	*ret = (uint16_t)v;
	return 0;
}

enum hostspec_split_problem hostspec_split(const char *text, struct hostspec_parts *ret)
{
	const char *colon;

	if (text[0] == '[') {
		const char *close = strchr(text, ']');

		if (!close)
			return HOSTSPEC_SPLIT_NO_CLOSE;
		if (close[1] && close[1] != ':')
			return HOSTSPEC_SPLIT_AFTER_CLOSE;
		*ret = (struct hostspec_parts){
		    .host = text + 1,
		    .host_len = (size_t)(close - text - 1),
		    .port = close[1] ? close + 2 : NULL,
		    .bracketed = true,
		};
		return HOSTSPEC_SPLIT_OK;
	}
	colon = strchr(text, ':');
	if (colon && strchr(colon + 1, ':'))
		return HOSTSPEC_SPLIT_BARE_IPV6;
	*ret = (struct hostspec_parts){
	    .host = text,
	    .host_len = colon ? (size_t)(colon - text) : strlen(text),
	    .port = colon ? colon + 1 : NULL,
	};
	return HOSTSPEC_SPLIT_OK;
}

void hostspec_format(const char *host, uint16_t port, char *buf, size_t size)
{
	if (strchr(host, ':'))
		snprintf(buf, size, "[%s]:%u", host, (unsigned)port);
	else
		snprintf(buf, size, "%s:%u", host, (unsigned)port);
}
