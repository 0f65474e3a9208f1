#include "filedigest.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#define FNV_PRIME 0x100000001b3ull

/*
 * FNV-1a 64 is not a cryptographic hash, and need not be: the digest only tells a file
 * the administrator rewrote from one left as it was. Whoever could craft a second file
 * with the same digest can write the file itself, so a collision gains them nothing, and
 * by chance one is 1 in 2^64. Each step is a bijection of the state, so two files of the
 * same size that differ in a single byte (a one-character passphrase edit) never collide.
 * The digest of a passphrase sits in memory next to the key it decrypts, which is worth
 * more to anyone who can read it.
 */
uint64_t file_digest_hash(uint64_t hash, const void *data, size_t len)
{
	const unsigned char *p = data;

	for (size_t i = 0; i < len; i++) {
		hash ^= p[i];
		hash *= FNV_PRIME;
	}
	return hash;
}

int file_digest_read(int fd, struct file_digest *ret)
{
	struct file_digest d = {.hash = FILE_DIGEST_HASH_INIT};
	unsigned char buf[4096];
	int r = 0;

	for (;;) {
		ssize_t n = pread(fd, buf, sizeof(buf), (off_t)d.size);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			break;
		}
		if (n == 0)
			break;
		d.hash = file_digest_hash(d.hash, buf, (size_t)n);
		d.size += (uint64_t)n;
	}
	/* it held a piece of a key or passphrase */
	explicit_bzero(buf, sizeof(buf));
	if (r == 0)
		*ret = d;
	return r;
}

bool file_digest_equal(const struct file_digest *a, const struct file_digest *b)
{
	return a->size == b->size && a->hash == b->hash;
}
