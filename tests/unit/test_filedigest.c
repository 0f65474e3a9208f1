#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "filedigest.h"

static uint64_t hash_of(const char *s)
{
	return file_digest_hash(FILE_DIGEST_HASH_INIT, s, strlen(s));
}

/* The published FNV-1a 64 test vectors. */
static void test_hash_vectors(void **state)
{
	(void)state;
	assert_int_equal(hash_of(""), 0xcbf29ce484222325ull);
	assert_int_equal(hash_of("a"), 0xaf63dc4c8601ec8cull);
	assert_int_equal(hash_of("foobar"), 0x85944171f73967e8ull);
	assert_int_equal(file_digest_hash(hash_of("foo"), "bar", 3), hash_of("foobar"));
}

/* A file larger than the read buffer digests as one piece, from offset 0 wherever the
 * file position is, and the position stays where it was. */
static void test_read_whole_file(void **state)
{
	char path[] = "/tmp/moletun-test-filedigest.XXXXXX";
	size_t len = 3 * 4096 + 17;
	struct file_digest d, again;
	char *data = malloc(len);
	int fd = mkstemp(path);

	(void)state;
	assert_non_null(data);
	assert_true(fd >= 0);
	unlink(path);
	for (size_t i = 0; i < len; i++)
		data[i] = (char)(i * 7 + i / 251);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	assert_int_equal(lseek(fd, 100, SEEK_SET), 100);
	assert_int_equal(file_digest_read(fd, &d), 0);
	assert_int_equal(d.size, len);
	assert_int_equal(d.hash, file_digest_hash(FILE_DIGEST_HASH_INIT, data, len));
	assert_int_equal(lseek(fd, 0, SEEK_CUR), 100);
	assert_int_equal(file_digest_read(fd, &again), 0);
	assert_true(file_digest_equal(&d, &again));

	/* one byte more or one byte other: another digest */
	assert_int_equal(pwrite(fd, "x", 1, (off_t)len), 1);
	assert_int_equal(file_digest_read(fd, &again), 0);
	assert_false(file_digest_equal(&d, &again));
	assert_int_equal(ftruncate(fd, (off_t)len), 0);
	assert_int_equal(pwrite(fd, "\xff", 1, 5000), 1);
	assert_int_equal(file_digest_read(fd, &again), 0);
	assert_int_equal(again.size, d.size);
	assert_false(file_digest_equal(&d, &again));
	close(fd);
	free(data);
}

/* An empty file is recorded: it differs from "not recorded" (all zero). */
static void test_empty_and_errors(void **state)
{
	char path[] = "/tmp/moletun-test-filedigest.XXXXXX";
	struct file_digest d = {0}, none = {0}, kept = {.size = 1, .hash = 2};
	int fd = mkstemp(path), dir;

	(void)state;
	assert_true(fd >= 0);
	unlink(path);
	assert_int_equal(file_digest_read(fd, &d), 0);
	assert_int_equal(d.size, 0);
	assert_false(file_digest_equal(&d, &none));
	close(fd);

	assert_int_equal(file_digest_read(fd, &kept), -EBADF);
	dir = open("/tmp", O_RDONLY | O_DIRECTORY);
	assert_true(dir >= 0);
	assert_int_equal(file_digest_read(dir, &kept), -EISDIR);
	close(dir);
	assert_int_equal(kept.size, 1);
	assert_int_equal(kept.hash, 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hash_vectors),
	    cmocka_unit_test(test_read_whole_file),
	    cmocka_unit_test(test_empty_and_errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
