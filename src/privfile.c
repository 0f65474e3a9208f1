#include "privfile.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

int privfile_open(const char *path, int flags, mode_t forbidden, struct privfile_result *res)
{
	int fd;

	memset(res, 0, sizeof(*res));
	res->path = path;
	res->forbidden = forbidden;
	if ((flags & O_ACCMODE) == O_RDONLY)
		flags |= O_NONBLOCK;
	fd = open(path, flags | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, 0600);
	if (fd < 0) {
		/* ELOOP from O_NOFOLLOW: the last component is a symbolic link */
		res->problem = errno == ELOOP ? PRIVFILE_SYMLINK : PRIVFILE_ERRNO;
		res->error = errno;
		return -1;
	}
	if (fstat(fd, &res->st) < 0) {
		res->problem = PRIVFILE_ERRNO;
		res->error = errno;
	} else if (!S_ISREG(res->st.st_mode)) {
		res->problem = PRIVFILE_NOT_REGULAR;
	} else if (res->st.st_uid != 0 && res->st.st_uid != geteuid()) {
		res->problem = PRIVFILE_OWNER;
	} else if (res->st.st_mode & forbidden) {
		res->problem = PRIVFILE_MODE;
	} else {
		return fd;
	}
	close(fd);
	return -1;
}

/* The effective user's name, or its uid as text when it has no name. */
static const char *euser_name(char *buf, size_t size)
{
	struct passwd *pw = getpwuid(geteuid());

	if (pw && pw->pw_name[0])
		return pw->pw_name;
	snprintf(buf, size, "%u", (unsigned)geteuid());
	return buf;
}

void privfile_describe(const struct privfile_result *res, char *buf, size_t size)
{
	mode_t mode = res->st.st_mode & 07777;
	char uid_text[16];
	const char *user;

	switch (res->problem) {
	case PRIVFILE_OK:
		snprintf(buf, size, "ok");
		break;
	case PRIVFILE_ERRNO:
		if (res->error == EACCES && geteuid() != 0 && res->path) {
			user = euser_name(uid_text, sizeof(uid_text));
			snprintf(buf, size, "%s (moletun runs as %s here: chown %s: %s)",
				 strerror(res->error), user, user, res->path);
			break;
		}
		snprintf(buf, size, "%s", strerror(res->error));
		break;
	case PRIVFILE_SYMLINK:
		snprintf(buf, size,
			 "is a symbolic link (moletun does not follow links to secrets "
			 "or known_hosts: name the file itself)");
		break;
	case PRIVFILE_NOT_REGULAR:
		snprintf(buf, size, "not a regular file");
		break;
	case PRIVFILE_OWNER:
		user = euser_name(uid_text, sizeof(uid_text));
		if (geteuid() == 0)
			snprintf(buf, size,
				 "is owned by uid %u (must be root, the user moletun runs as here: "
				 "chown root: %s)",
				 (unsigned)res->st.st_uid, res->path ? res->path : "FILE");
		else
			snprintf(buf, size,
				 "is owned by uid %u (must be root or %s, uid %u, the user moletun "
				 "runs as here: chown %s: %s)",
				 (unsigned)res->st.st_uid, user, (unsigned)geteuid(), user,
				 res->path ? res->path : "FILE");
		break;
	case PRIVFILE_MODE:
		if (res->forbidden & 044)
			snprintf(buf, size, "is %s by group or others (mode %04o)",
				 (mode & 044) ? "readable" : "accessible", (unsigned)mode);
		else
			snprintf(buf, size, "is writable by group or others (mode %04o)",
				 (unsigned)mode);
		break;
	}
}

int privfile_read(int fd, size_t max, char **ret, size_t *ret_len)
{
	struct stat st;
	size_t got = 0, size;
	char *buf;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (st.st_size < 0 || (uint64_t)st.st_size > max)
		return -EFBIG;
	size = (size_t)st.st_size;
	buf = malloc(size + 1);
	if (!buf)
		return -ENOMEM;
	/* a file that shrank meanwhile is read to its new end */
	while (got < size) {
		ssize_t n = pread(fd, buf + got, size - got, (off_t)got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int r = -errno;

			free_secret(buf, size + 1);
			return r;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	buf[got] = '\0';
	*ret = buf;
	*ret_len = got;
	return 0;
}
