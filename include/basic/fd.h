#pragma once
#include <stdint.h>

/*
 * The process's descriptors as a whole, with no daemon state; callers log. 0 or a
 * negative errno; outputs are untouched on failure.
 */

/*
 * Raises the soft RLIMIT_NOFILE to the hard limit (each client holds a descriptor, and a
 * login shell's soft limit is 1024). `ret_before` gets the soft limit found, `ret_limit`
 * the one now in force.
 */
int fd_raise_limit(uint64_t *ret_limit, uint64_t *ret_before);

/* The soft RLIMIT_NOFILE in force now. */
int fd_limit(uint64_t *ret_limit);

/*
 * Sets close-on-exec on every open descriptor from `lowest` up that lacks it (read from
 * /proc/self/fd). For descriptors that libraries open without it and do not hand out.
 */
int fd_cloexec_from(int lowest);
