#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

void base64_encode(const unsigned char *in, size_t len, char *out, size_t out_size, bool pad)
{
	static const char alphabet[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t o = 0;

	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16;
		size_t n = len - i < 3 ? len - i : 3;
		char quad[4];

		if (n > 1)
			v |= (uint32_t)in[i + 1] << 8;
		if (n > 2)
			v |= in[i + 2];
		quad[0] = alphabet[(v >> 18) & 63];
		quad[1] = alphabet[(v >> 12) & 63];
		quad[2] = n > 1 ? alphabet[(v >> 6) & 63] : '=';
		quad[3] = n > 2 ? alphabet[v & 63] : '=';
		for (int k = 0; k < 4; k++) {
			if (quad[k] == '=' && !pad)
				break;
			if (o + 1 < out_size)
				out[o++] = quad[k];
		}
	}
	if (out_size)
		out[o] = '\0';
}

int read_file(const char *path, size_t max, char **ret, size_t *ret_len)
{
	struct stat st;
	char *buf;
	size_t got = 0;
	int fd, r;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	if ((size_t)st.st_size > max) {
		close(fd);
		return -EFBIG;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	buf[got] = '\0';
	*ret = buf;
	*ret_len = got;
	return 0;
}

void free_secret(char *p, size_t len)
{
	if (!p)
		return;
	explicit_bzero(p, len);
	free(p);
}

static size_t page_rounded(size_t size)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	return (size + page - 1) / page * page;
}

char *secret_pages_alloc(size_t size)
{
	size_t len = page_rounded(size ? size : 1);
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	/*
	 * Not in a core dump, whatever LimitCORE says (Linux >= 3.4: a failure means something
	 * is badly wrong, so refuse rather than hold the key where dumps see it). Not in a
	 * child after fork() either (the alert exec path forks): Linux >= 4.14, and only a
	 * nicety, as that child executes another program at once.
	 */
	if (madvise(p, len, MADV_DONTDUMP) < 0) {
		int e = errno;

		munmap(p, len);
		errno = e;
		return NULL;
	}
	(void)madvise(p, len, MADV_WIPEONFORK);
	return p;
}

void secret_pages_free(char *p, size_t size)
{
	if (!p)
		return;
	explicit_bzero(p, size);
	munmap(p, page_rounded(size ? size : 1));
}

static int b64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

ssize_t base64_decode(const char *in, size_t len, unsigned char *out, size_t out_size)
{
	uint32_t acc = 0;
	int bits = 0;
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		int v;

		if (in[i] == '=')
			break;
		if (in[i] == ' ' || in[i] == '\n' || in[i] == '\r' || in[i] == '\t')
			continue;
		v = b64_value(in[i]);
		if (v < 0)
			return -EINVAL;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (o >= out_size)
				return -EINVAL;
			out[o++] = (unsigned char)(acc >> bits);
		}
	}
	return (ssize_t)o;
}
