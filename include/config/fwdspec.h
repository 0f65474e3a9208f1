#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hostspec.h"

enum forward_kind {
	FORWARD_LOCAL,
	FORWARD_REMOTE,
};

/*
 * One forward, in ssh_config LocalForward/RemoteForward syntax:
 *   [bind_address:]port host:hostport
 * IPv6 addresses go in brackets: "[::1]:5433 [fd00::5]:5432".
 */
struct forward_spec {
	enum forward_kind kind;
	char listen_host[HOSTSPEC_HOST_MAX +
			 1]; /* default "127.0.0.1" (loopback unless configured) */
	uint16_t listen_port;
	char target_host[HOSTSPEC_HOST_MAX + 1];
	uint16_t target_port;
};

/*
 * Parses `text` into *ret. Returns 0 or -EINVAL; on failure *ret is untouched and
 * `err` (if not NULL) receives a short human reason such as "missing target port".
 */
int fwdspec_parse(enum forward_kind kind, const char *text, struct forward_spec *ret, char *err,
		  size_t err_size);

/* "127.0.0.1:5433" / "[::1]:5433" for the listen side, same shape for the target. */
void fwdspec_format_listen(const struct forward_spec *f, char *buf, size_t size);
void fwdspec_format_target(const struct forward_spec *f, char *buf, size_t size);
