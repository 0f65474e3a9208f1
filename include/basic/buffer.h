#pragma once
#include <stddef.h>
#include <sys/types.h>

/* A growable byte queue: append at the tail, consume from the head. */
struct buffer {
	char *data;
	size_t start; /* first unread byte */
	size_t end;   /* one past the last byte */
	size_t cap;
};

void buffer_init(struct buffer *b);
void buffer_finish(struct buffer *b);
static inline size_t buffer_len(const struct buffer *b)
{
	return b->end - b->start;
}
/* Returns 0 or -ENOMEM. */
int buffer_append(struct buffer *b, const void *data, size_t len);
void buffer_consume(struct buffer *b, size_t len);
/* Drops the storage when empty so idle objects hold no memory. */
void buffer_compact(struct buffer *b);
/* Writes as much as the fd takes; returns bytes written or -errno (-EAGAIN included). */
ssize_t buffer_write_fd(struct buffer *b, int fd);
