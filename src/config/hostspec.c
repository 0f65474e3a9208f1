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
