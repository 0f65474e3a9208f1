#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Pieces shared by the parsers of address-like values (fwdspec.c, jumpspec.c, the host
 * key of a tunnel). Pure.
 */

/* Longest host name (or IP address) accepted, as DNS limits a name (RFC 1035). */
#define HOSTSPEC_HOST_MAX 255
/* Longest user name accepted for a server or a bastion. */
#define HOSTSPEC_USER_MAX 127

/* Writes the message to err (when given) and returns -EINVAL. */
int hostspec_fail(char *err, size_t err_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Letters, digits, '.', '-', '_': what a host name (or an interface zone) is made of. */
bool hostspec_is_hostname_char(char c);
/* An IPv6 literal without brackets; "fe80::1%eth0" too (the zone is kept, only checked). */
bool hostspec_is_ipv6(const char *s);
/* `len` decimal digits at s, 1..65535. 0 or -EINVAL (ret untouched). */
int hostspec_parse_port(const char *s, size_t len, uint16_t *ret);

/* "host", "host:port", "[v6]" or "[v6]:port" cut into its parts, which are not checked. */
struct hostspec_parts {
	const char *host; /* host_len bytes, without the brackets */
	size_t host_len;
	const char *port; /* up to the end of the text; NULL when no ':' was written */
	bool bracketed;
};

enum hostspec_split_problem {
	HOSTSPEC_SPLIT_OK,
	HOSTSPEC_SPLIT_NO_CLOSE,    /* '[' without ']' */
	HOSTSPEC_SPLIT_AFTER_CLOSE, /* ']' followed by something else than ':' */
	HOSTSPEC_SPLIT_BARE_IPV6,   /* more than one ':' outside brackets */
};

/*
 * Splits `text` at the ':' before the port (the one after ']' when it starts with '['),
 * leaving each parser to word the problem and to check the host and port its own way.
 * *ret is set only with HOSTSPEC_SPLIT_OK.
 */
enum hostspec_split_problem hostspec_split(const char *text, struct hostspec_parts *ret);

/* "host:port", or "[v6]:port" when the host holds a ':'. */
void hostspec_format(const char *host, uint16_t port, char *buf, size_t size);
