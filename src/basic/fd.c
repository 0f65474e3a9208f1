#include "fd.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/resource.h>

/*
 * Descriptors above 1024 are safe: libev runs on epoll, libssh2 and libcurl wait with
 * poll(), and moletun never calls curl_multi_fdset(), the one fd_set interface it links.
 */
int fd_raise_limit(uint64_t *ret_limit, uint64_t *ret_before)
{
	struct rlimit rl;
	rlim_t before;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return -errno;
	before = rl.rlim_cur;
	/* Linux caps the hard limit at fs.nr_open, so it is never RLIM_INFINITY here */
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			return -errno;
	}
	*ret_limit = rl.rlim_cur;
	*ret_before = before;
	return 0;
}

int fd_limit(uint64_t *ret_limit)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return -errno;
	*ret_limit = rl.rlim_cur;
	return 0;
}

int fd_cloexec_from(int lowest)
{
	DIR *dir = opendir("/proc/self/fd"); /* glibc opens it O_CLOEXEC */
	struct dirent *e;

	if (!dir)
		return -errno;
	while ((e = readdir(dir))) {
		char *end;
		long fd = strtol(e->d_name, &end, 10);
		int flags;

		if (*end || end == e->d_name || fd < lowest || fd == dirfd(dir))
			continue;
		/* a descriptor closed meanwhile (by a resolver thread) fails with EBADF: fine */
		flags = fcntl((int)fd, F_GETFD);
		if (flags >= 0 && !(flags & FD_CLOEXEC))
			fcntl((int)fd, F_SETFD, flags | FD_CLOEXEC);
	}
	closedir(dir);
	return 0;
}
