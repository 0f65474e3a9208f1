#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "buffer.h"

/* Appends and consumes keep the bytes in order across growth, and an emptied buffer that
 * is compacted holds no memory. */
static void test_fifo_order_and_compact(void **state)
{
	struct buffer b;
	char chunk[1000], out[1000];
	size_t written = 0, read = 0;

	buffer_init(&b);
	assert_int_equal(buffer_len(&b), 0);
	for (int round = 0; round < 50; round++) {
		for (size_t i = 0; i < sizeof(chunk); i++)
			chunk[i] = (char)(written + i);
		assert_int_equal(buffer_append(&b, chunk, sizeof(chunk)), 0);
		written += sizeof(chunk);
		/* consume a bit less than was added: the head moves, the tail grows */
		size_t take = sizeof(out) - 7;

		memcpy(out, b.data + b.start, take);
		for (size_t i = 0; i < take; i++)
			assert_int_equal((unsigned char)out[i], (unsigned char)(read + i));
		buffer_consume(&b, take);
		read += take;
		assert_int_equal(buffer_len(&b), written - read);
	}
	buffer_consume(&b, buffer_len(&b));
	assert_int_equal(buffer_len(&b), 0);
	buffer_compact(&b);
	assert_null(b.data);
	assert_int_equal(b.cap, 0);
	/* usable again after compacting */
	assert_int_equal(buffer_append(&b, "x", 1), 0);
	assert_int_equal(buffer_len(&b), 1);
	buffer_finish(&b);
}

/* buffer_write_fd writes what the socket takes, keeps the rest, and says -EAGAIN when full. */
static void test_write_fd_partial_and_eagain(void **state)
{
	struct buffer b;
	int p[2];
	size_t total = 1 << 20, got = 0;
	char *data = malloc(total), *back = malloc(total);
	ssize_t n;

	assert_non_null(data);
	assert_non_null(back);
	for (size_t i = 0; i < total; i++)
		data[i] = (char)(i * 7);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, p), 0);
	buffer_init(&b);
	assert_int_equal(buffer_append(&b, data, total), 0);
	n = buffer_write_fd(&b, p[1]);
	assert_true(n > 0 && (size_t)n < total); /* a socket takes far less than 1 MiB */
	assert_int_equal(buffer_len(&b), total - (size_t)n);
	assert_int_equal(buffer_write_fd(&b, p[1]), -EAGAIN);
	while (got < total) {
		ssize_t r = read(p[0], back + got, total - got);

		if (r > 0)
			got += (size_t)r;
		n = buffer_write_fd(&b, p[1]);
		assert_true(n >= 0 || n == -EAGAIN);
	}
	assert_int_equal(buffer_len(&b), 0);
	assert_memory_equal(back, data, total);
	/* a closed reader is an error, not a hang */
	assert_int_equal(buffer_append(&b, "y", 1), 0);
	close(p[0]);
	assert_int_equal(buffer_write_fd(&b, p[1]), -EPIPE);
	close(p[1]);
	buffer_finish(&b);
	free(data);
	free(back);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_fifo_order_and_compact),
	    cmocka_unit_test(test_write_fd_partial_and_eagain),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
