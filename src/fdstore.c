#include "fdstore.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "log.h"
#include "net.h"
#include "notify.h"

struct fdstore_entry {
	char name[FDSTORE_NAME_MAX];
	int fd;
	bool in_use;
};

struct fdstore {
	struct fdstore_entry *entries;
	size_t n, cap;
};

static int entry_add(struct fdstore *s, const char *name, int fd, bool in_use)
{
	size_t len = strlen(name);
	struct fdstore_entry *e;

	if (len >= FDSTORE_NAME_MAX)
		return -ENAMETOOLONG;
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 8;

		e = realloc(s->entries, cap * sizeof(*e));
		if (!e)
			return -ENOMEM;
		s->entries = e;
		s->cap = cap;
	}
	e = &s->entries[s->n++];
	memcpy(e->name, name, len + 1);
	e->fd = fd;
	e->in_use = in_use;
	return 0;
}

/* Keeps the order: the first of a name stays the first (see fdstore_drop_duplicates). */
static void entry_remove(struct fdstore *s, size_t i)
{
	s->n--;
	memmove(&s->entries[i], &s->entries[i + 1], (s->n - i) * sizeof(s->entries[0]));
}

/* Closes our copy and asks the manager to close its own. */
static void entry_drop(struct fdstore *s, size_t i)
{
	close(s->entries[i].fd);
	notify_fdstore_remove(s->entries[i].name);
	entry_remove(s, i);
}

static struct fdstore_entry *find_unused(struct fdstore *s, const char *name)
{
	for (size_t i = 0; i < s->n; i++)
		if (!s->entries[i].in_use && strcmp(s->entries[i].name, name) == 0)
			return &s->entries[i];
	return NULL;
}

/*
 * Takes the descriptors the service manager passed, named by LISTEN_FDNAMES in order. With
 * more descriptors than names the unnamed ones are closed (nothing could ever adopt or
 * prune them: they would listen, unserved, for as long as this process runs); surplus names
 * are ignored. 0 or -ENOMEM (every descriptor closed).
 */
static int fdstore_take_passed(struct fdstore *s)
{
	const char *env = getenv("LISTEN_FDNAMES");
	char *names = env ? strdup(env) : NULL, *next = names;
	int n, n_names = 0, r = 0;

	/* Unsets LISTEN_* so nothing we start inherits them. */
	n = sd_listen_fds(1);
	if (n < 0) {
		log_warn("descriptors from the service manager: %s; binding every socket anew",
			 strerror(-n));
		free(names);
		return 0;
	}
	if (env && !names)
		r = -ENOMEM;
	for (const char *p = env; p && *p; p++)
		n_names += *p == ':';
	n_names += env != NULL;
	if (env && n_names != n)
		log_warn("the service manager passed %d descriptors but %d names (LISTEN_FDNAMES): "
			 "%s",
			 n, n_names,
			 n > n_names ? "closing the descriptors without a name"
				     : "ignoring the names without a descriptor");
	for (int i = 0; i < n; i++) {
		int fd = SD_LISTEN_FDS_START + i;
		const char *name = env ? strsep(&next, ":") : "unknown";

		if (r == 0 && name)
			r = entry_add(s, name, fd, false);
		if (r == 0 && name) {
			log_debug("descriptor %d from the service manager: %s", fd, name);
			continue;
		}
		if (r == -ENAMETOOLONG) {
			log_warn("descriptor %d from the service manager: name too long", fd);
			r = 0;
		}
		if (!name)
			log_warn("descriptor %d from the service manager has no name: closing it",
				 fd);
		close(fd);
	}
	free(names);
	return r;
}

/*
 * FDSTOREREMOVE=1 removes every entry of a name, so dropping a spare would take the one in
 * use out of the store too. The first descriptor of a name is kept and the others closed;
 * the manager is then left one entry of the name: all removed, the kept one stored again
 * (the manager ignores a socket it holds already, hence the removal first).
 */
static void fdstore_drop_duplicates(struct fdstore *s)
{
	for (size_t i = 0; i < s->n; i++) {
		const char *name = s->entries[i].name;
		bool found = false;

		for (size_t j = s->n; j-- > i + 1;) {
			if (strcmp(s->entries[j].name, name) != 0)
				continue;
			log_warn("descriptor %d from the service manager: another one is named %s "
				 "already, closing it",
				 s->entries[j].fd, name);
			close(s->entries[j].fd);
			entry_remove(s, j);
			found = true;
		}
		if (found && notify_fdstore_remove(name) == 0)
			notify_fdstore(s->entries[i].fd, name);
	}
}

int fdstore_create(struct fdstore **ret)
{
	struct fdstore *s = calloc(1, sizeof(*s));
	int r;

	if (!s)
		return -ENOMEM;
	r = fdstore_take_passed(s);
	if (r < 0) {
		fdstore_destroy(s);
		return r;
	}
	fdstore_drop_duplicates(s);
	*ret = s;
	return 0;
}

void fdstore_destroy(struct fdstore *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->n; i++)
		close(s->entries[i].fd);
	free(s->entries);
	free(s);
}

int fdstore_tcp_name(const char *host, uint16_t port, char *buf, size_t size)
{
	char canonical[INET6_ADDRSTRLEN];
	int r = net_canonical_host(host, canonical, sizeof(canonical));

	if (r < 0)
		return r;
	/* FDNAME may not hold ':'; IPv4 addresses have no '_', so names stay unique. */
	for (char *p = canonical; *p; p++)
		if (*p == ':')
			*p = '_';
	if ((size_t)snprintf(buf, size, "L-%s-%u", canonical, port) >= size)
		return -ENAMETOOLONG;
	return 0;
}

/* Closes unused sockets on `port`: a new one may be bound where an old one still listens
 * only once that one is gone (e.g. 127.0.0.1:5433 changed to 0.0.0.0:5433). */
static bool drop_unused_on_port(struct fdstore *s, uint16_t port)
{
	char suffix[16];
	bool dropped = false;

	snprintf(suffix, sizeof(suffix), "-%u", port);
	for (size_t i = s->n; i-- > 0;) {
		const char *name = s->entries[i].name;
		size_t len = strlen(name), slen = strlen(suffix);

		if (s->entries[i].in_use || strncmp(name, "L-", 2) != 0 || len < slen ||
		    strcmp(name + len - slen, suffix) != 0)
			continue;
		log_info("closing listener %s: its port is wanted for another address", name);
		entry_drop(s, i);
		dropped = true;
	}
	return dropped;
}

int fdstore_listen_tcp(struct fdstore *s, const char *host, uint16_t port)
{
	struct fdstore_entry *e;
	char name[FDSTORE_NAME_MAX];
	int fd, r;

	r = fdstore_tcp_name(host, port, name, sizeof(name));
	if (r < 0)
		return r;
	e = find_unused(s, name);
	if (e) {
		r = net_check_listener(e->fd, host, port);
		if (r == 0)
			r = net_set_nonblock(e->fd);
		if (r == 0) {
			e->in_use = true;
			return e->fd;
		}
		log_warn("descriptor %s from the service manager is not a TCP listener on that "
			 "address as moletun binds one (%s): binding a new one",
			 name, strerror(-r));
		entry_drop(s, (size_t)(e - s->entries));
	}
	fd = net_listen(host, port);
	if (fd == -EADDRINUSE && drop_unused_on_port(s, port))
		fd = net_listen(host, port);
	if (fd < 0)
		return fd;
	r = entry_add(s, name, fd, true);
	if (r < 0) {
		close(fd);
		return r;
	}
	r = notify_fdstore(fd, name);
	if (r < 0 && r != -ENOTCONN)
		log_warn("cannot hand listener %s to the service manager: %s", name, strerror(-r));
	return fd;
}

void fdstore_release(struct fdstore *s, int fd)
{
	for (size_t i = 0; i < s->n; i++) {
		if (s->entries[i].fd == fd) {
			s->entries[i].in_use = false;
			return;
		}
	}
	close(fd);
}

void fdstore_prune(struct fdstore *s)
{
	for (size_t i = s->n; i-- > 0;) {
		if (s->entries[i].in_use)
			continue;
		log_info("closing listener %s: no longer configured", s->entries[i].name);
		entry_drop(s, i);
	}
}

int fdstore_take(struct fdstore *s, const char *name)
{
	struct fdstore_entry *e = find_unused(s, name);
	int fd;

	if (!e)
		return -ENOENT;
	fd = e->fd;
	entry_remove(s, (size_t)(e - s->entries));
	return fd;
}
