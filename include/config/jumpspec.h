#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Most bastions one tunnel may pass through (ssh -J has no limit; a long chain is a typo). */
#define JUMP_HOPS_MAX 8

/* "user@" + "[" + host + "]:" + port, with its NUL (HOSTSPEC_USER_MAX, HOSTSPEC_HOST_MAX). */
#define JUMP_HOP_TEXT_MAX 400

/*
 * One bastion of a proxy_jump path, in the order they are passed through: the first is
 * reached from this machine, each further one (and the tunnel's own host) through a
 * direct-tcpip channel of the one before.
 */
struct jump_hop {
	char *user; /* NULL when not written: the tunnel's user (config_check.c fills it in) */
	char *host; /* a host name or an IP address; IPv6 without brackets */
	uint16_t port;
};

/*
 * Parses an ssh -J list: [user@]host[:port][,[user@]host[:port]...], IPv6 addresses in
 * brackets ("[fd00::1]:2222"), the port defaulting to 22; blanks around a hop are
 * ignored. "none" or an empty text means no hops (*ret_hops NULL, *ret_n 0). Returns 0,
 * -EINVAL (with a short reason such as "hop 2: invalid port '0' (1..65535)" in err),
 * -E2BIG for more than JUMP_HOPS_MAX hops, or -ENOMEM; on failure *ret_hops and *ret_n
 * are untouched.
 */
int jumpspec_parse(const char *text, struct jump_hop **ret_hops, size_t *ret_n, char *err,
		   size_t err_size);

/* Frees what jumpspec_parse() returned (NULL is fine). */
void jumpspec_free(struct jump_hop *hops, size_t n);

/* "user@host:22", "user@[fd00::1]:2222", or "host:22" when user is NULL. */
void jumpspec_format_hop(const struct jump_hop *hop, char *buf, size_t size);

/* The hops comma-separated as they would be written, "" for none. */
void jumpspec_format(const struct jump_hop *hops, size_t n, char *buf, size_t size);

/* Same hops in the same order (users compared as written, NULL only equal to NULL). */
bool jumpspec_equal(const struct jump_hop *a, size_t n_a, const struct jump_hop *b, size_t n_b);
