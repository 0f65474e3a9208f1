#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Writes the whole buffer to a blocking fd; 0 or -1 with errno. */
int write_all(int fd, const void *buf, size_t len);
/* Standard base64; without padding when `pad` is false (OpenSSH fingerprints). */
void base64_encode(const unsigned char *in, size_t len, char *out, size_t out_size, bool pad);
/* Reads a whole small file (at most max bytes) into a NUL-terminated heap buffer. */
int read_file(const char *path, size_t max, char **ret, size_t *ret_len);
/* Zeroes and frees a secret. */
void free_secret(char *p, size_t len);
/*
 * `size` bytes (zeroed) on pages of their own that a core dump leaves out (MADV_DONTDUMP),
 * for a secret that must stay in memory, such as a decrypted key. NULL with errno set on
 * failure. Release with secret_pages_free() and the same size: it zeroes them first.
 */
char *secret_pages_alloc(size_t size);
void secret_pages_free(char *p, size_t size);
/* Decodes base64 (whitespace skipped); returns decoded length or -EINVAL. */
ssize_t base64_decode(const char *in, size_t len, unsigned char *out, size_t out_size);
