#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * What a reload compares to notice a file rewritten in place: its size and a hash of its
 * contents, never the contents themselves (they are keys and passphrases). All zero means
 * "not recorded"; a file that was read never digests to that.
 */
struct file_digest {
	uint64_t size;
	uint64_t hash;
};

#define FILE_DIGEST_HASH_INIT 0xcbf29ce484222325ull

/* FNV-1a 64 of `len` bytes, continuing from `hash` (FILE_DIGEST_HASH_INIT to start). */
uint64_t file_digest_hash(uint64_t hash, const void *data, size_t len);

/*
 * Digests `fd` from offset 0 to its end with pread(), so its file position is left alone.
 * Returns 0, or a negative errno with *ret untouched.
 */
int file_digest_read(int fd, struct file_digest *ret);

bool file_digest_equal(const struct file_digest *a, const struct file_digest *b);
