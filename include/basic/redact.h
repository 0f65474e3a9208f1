#pragma once
#include <stddef.h>

/*
 * A URL as check output, logs, status and alert errors may show it: scheme and host[:port]
 * only, then "/..." when a path, query or fragment followed (they may hold tokens:
 * "https://hooks.slack.com/services/T0/B0/SECRET"). Userinfo is everything before the
 * LAST '@' of the authority (the part before the first '/', '?' or '#'), so a password
 * holding '@' is dropped whole. A host[:port] that is not plainly a host name, an IPv4 or
 * bracketed IPv6 address with an optional numeric port is shown as "(redacted)": in
 * "http://user:pa/ss@host" the authority is "user:pa", which is a password. No "://"
 * gives "(url)". Pure.
 */
void url_redact(const char *url, char *buf, size_t size);
