#pragma once
#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

/*
 * Files moletun trusts with a secret or with trust itself: the identity file, its
 * passphrase file and known_hosts. They are opened once, without following a symbolic
 * link at the last component, and every check is made on the opened descriptor (fstat),
 * so what was checked is what is read: no window between a check by path and the read.
 */

/* Group/other bits a key or a passphrase file must not have (OpenSSH's rule for keys). */
#define PRIVFILE_MODE_SECRET 077
/* known_hosts may be world-readable, but nobody else may write it (OpenSSH's rule). */
#define PRIVFILE_MODE_TRUSTED 022

enum privfile_problem {
	PRIVFILE_OK,
	PRIVFILE_ERRNO,	      /* open or fstat failed: see `error` */
	PRIVFILE_SYMLINK,     /* O_NOFOLLOW refused the last component */
	PRIVFILE_NOT_REGULAR, /* a directory, a FIFO, a device ... */
	PRIVFILE_OWNER,	      /* owned by neither root nor the effective user */
	PRIVFILE_MODE,	      /* has some of the forbidden mode bits */
};

struct privfile_result {
	enum privfile_problem problem;
	const char *path; /* as given to privfile_open(), for the hint in privfile_describe() */
	int error;	  /* errno, for PRIVFILE_ERRNO */
	struct stat st;	  /* valid from PRIVFILE_NOT_REGULAR on */
	mode_t forbidden; /* the mode bits that were asked about */
};

/*
 * Opens `path` with `flags` | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY (O_NONBLOCK too for a read:
 * a FIFO must not block the open) and checks, on the descriptor, that it is a regular file
 * owned by root or by the effective user with none of the `forbidden` mode bits. Returns the
 * descriptor, or -1 with *res telling why (the descriptor is closed then).
 */
int privfile_open(const char *path, int flags, mode_t forbidden, struct privfile_result *res);

/*
 * Why a privfile_open() failed, to follow "identity file PATH": "No such file or
 * directory", "is a symbolic link (moletun does not follow links to secrets)", "is owned by
 * uid 1000 (must be root or moletun, uid 998, the user moletun runs as: chown moletun:
 * PATH)", "is readable by group or others (mode 0644)", ... A file the effective user may
 * not open names the chown that gives it to that user (a root-owned 0600 key is the usual
 * case: the service runs as an unprivileged user).
 */
void privfile_describe(const struct privfile_result *res, char *buf, size_t size);

/*
 * Reads the whole file behind `fd` from offset 0 (pread: the position is left alone) into
 * a new NUL-terminated heap buffer of at most `max` bytes. Returns 0, -EFBIG when larger,
 * -ENOMEM or -errno; the buffer may hold a secret: release it with free_secret().
 */
int privfile_read(int fd, size_t max, char **ret, size_t *ret_len);
