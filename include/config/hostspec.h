#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Pieces shared by the parsers of address-like values (fwdspec.c, jumpspec.c). Pure.
 */

/* Writes the message to err (when given) and returns -EINVAL. */
int hostspec_fail(char *err, size_t err_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Letters, digits, '.', '-', '_': what a host name (or an interface zone) is made of. */
bool hostspec_is_hostname_char(char c);
/* An IPv6 literal without brackets; "fe80::1%eth0" too (the zone is kept, only checked). */
bool hostspec_is_ipv6(const char *s);
/* `len` decimal digits at s, 1..65535. 0 or -EINVAL (ret untouched). */
int hostspec_parse_port(const char *s, size_t len, uint16_t *ret);
