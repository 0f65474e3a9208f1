#include "buffer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

void buffer_init(struct buffer *b)
{
	memset(b, 0, sizeof(*b));
}

void buffer_finish(struct buffer *b)
{
	free(b->data);
	buffer_init(b);
}

int buffer_append(struct buffer *b, const void *data, size_t len)
{
	if (len == 0)
		return 0;
	if (b->cap - b->end < len) {
		size_t used = buffer_len(b);

		if (b->start > 0 && b->cap - used >= len && used < b->cap / 2) {
			memmove(b->data, b->data + b->start, used);
		} else {
			size_t cap = b->cap ? b->cap : 4096;
			char *p;

			while (cap - used < len)
				cap *= 2;
			p = malloc(cap);
			if (!p)
				return -ENOMEM;
			if (used)
				memcpy(p, b->data + b->start, used);
			free(b->data);
			b->data = p;
			b->cap = cap;
		}
		b->start = 0;
		b->end = used;
	}
	memcpy(b->data + b->end, data, len);
	b->end += len;
	return 0;
}

void buffer_consume(struct buffer *b, size_t len)
{
	b->start += len;
	if (b->start >= b->end)
		b->start = b->end = 0;
}

void buffer_compact(struct buffer *b)
{
	if (buffer_len(b) == 0 && b->data) {
		free(b->data);
		buffer_init(b);
	}
}

ssize_t buffer_write_fd(struct buffer *b, int fd)
{
	size_t total = 0;

	while (buffer_len(b) > 0) {
		ssize_t n = send(fd, b->data + b->start, buffer_len(b), MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (total > 0 && errno == EAGAIN)
				break;
			return -errno;
		}
		buffer_consume(b, (size_t)n);
		total += (size_t)n;
	}
	return (ssize_t)total;
}
