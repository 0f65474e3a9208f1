#include "redact.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static bool is_host_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '-' || c == '_';
}

/* "host", "host:443", "10.0.0.1:8080", "[::1]:9093": nothing that could be a secret. */
static bool plain_host_port(const char *p, const char *end)
{
	const char *start = p;

	if (p < end && *p == '[') {
		for (p++; p < end && *p != ']'; p++)
			if (!strchr("0123456789abcdefABCDEF:.", *p))
				return false;
		if (p == end || p == start + 1)
			return false;
		p++;
	} else {
		while (p < end && is_host_char(*p))
			p++;
		if (p == start)
			return false;
	}
	if (p < end && *p == ':') {
		const char *digits = ++p;

		while (p < end && *p >= '0' && *p <= '9')
			p++;
		if (p == digits || p - digits > 5)
			return false;
	}
	return p == end;
}

void url_redact(const char *url, char *buf, size_t size)
{
	const char *scheme_end = strstr(url, "://"), *host, *end, *at;

	if (!scheme_end) {
		snprintf(buf, size, "(url)");
		return;
	}
	host = scheme_end + 3;
	end = host + strcspn(host, "/?#");
	/* the last '@' before the path: a user name or password may contain '@' too */
	for (at = end; at > host && at[-1] != '@'; at--)
		;
	if (at > host)
		host = at;
	if (!plain_host_port(host, end))
		snprintf(buf, size, "%.*s(redacted)%s", (int)(scheme_end + 3 - url), url,
			 *end ? "/..." : "");
	else
		snprintf(buf, size, "%.*s%.*s%s", (int)(scheme_end + 3 - url), url,
			 (int)(end - host), host, *end ? "/..." : "");
}
