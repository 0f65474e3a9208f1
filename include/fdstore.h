#pragma once
#include <stddef.h>
#include <stdint.h>

/*
 * The daemon's listening sockets, by name, kept open across tunnel restarts (reload) and
 * process restarts (systemd's FD store), so a restart refuses no client: connections wait
 * in the kernel's backlog until the new process accepts them.
 *
 * At start, fdstore_create() takes the descriptors the service manager passed
 * (LISTEN_FDS / LISTEN_FDNAMES: the FD store, or socket activation) and unsets the
 * variables. A local forward's listener is named after its canonical listen address,
 * "L-127.0.0.1-5433" ("L-__1-5433" for ::1: FDNAME allows no ':'); the control socket is
 * "control". Every socket bound here is handed to the FD store (FDSTORE=1); one that is
 * no longer configured is closed and removed from it (FDSTOREREMOVE=1) by fdstore_prune().
 * Of descriptors passed under one name the first is kept and the others closed, leaving the
 * FD store one entry of that name (FDSTOREREMOVE=1 removes every entry of a name); a passed
 * descriptor without a name is closed.
 * Outside systemd nothing is adopted or stored; sockets are still kept across reloads.
 */
struct fdstore;

#define FDSTORE_CONTROL "control"
/* An FDNAME is at most 255 characters (sd_pid_notify_with_fds(3)), plus the NUL. */
#define FDSTORE_NAME_MAX 256

/* 0 or -ENOMEM; *ret untouched on failure. Never fails for bad LISTEN_* variables. */
int fdstore_create(struct fdstore **ret);
/* Closes this process's copies only: the FD store keeps its own. Accepts NULL. */
void fdstore_destroy(struct fdstore *s);

/*
 * A non-blocking listening TCP socket on host:port (numeric host): the one kept under its
 * name when it checks out (a listening TCP socket bound to that address), else a new one,
 * handed to the FD store. The store keeps owning it: give it back with fdstore_release().
 * fd or -errno.
 */
int fdstore_listen_tcp(struct fdstore *s, const char *host, uint16_t port);
/* The caller is done with fd: it stays open (and stored) until fdstore_prune(). */
void fdstore_release(struct fdstore *s, int fd);
/* Closes every socket nobody uses, and removes it from the FD store. */
void fdstore_prune(struct fdstore *s);

/*
 * Takes the passed descriptor called `name` out of the store: the caller owns it now and
 * checks it. fd or -ENOENT.
 */
int fdstore_take(struct fdstore *s, const char *name);

/* The FDNAME of a TCP listener on host:port, canonical spelling. 0 or -errno. */
int fdstore_tcp_name(const char *host, uint16_t port, char *buf, size_t size);
