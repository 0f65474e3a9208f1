#include <errno.h>
#include <libssh2.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "hostkey.h"

#define KEY_A "AAAAC3NzaC1lZDI1NTE5AAAAIDm8mQe1lD3h9nP4s0Q0n0R0WmC4l7M6mQp2K8xHq1a9"
#define KEY_B "AAAAC3NzaC1lZDI1NTE5AAAAIK2b7v8F9m2Q3nq7sH0xJc1q4bLwYg0Zp6lN7a3QhD2u"

static const struct hostkey_dest db = {"db.example.com", 22};
static const struct hostkey_dest db2222 = {"10.0.0.5", 2222};

/* The relevant digest of `text` as a known_hosts file, for `dests`. */
static struct file_digest digest_of(const char *text, const struct hostkey_dest *dests, size_t n)
{
	struct file_digest d = {0};
	int fd = memfd_create("known_hosts", MFD_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	assert_int_equal(hostkey_relevant_digest(fd, dests, n, &d), 0);
	close(fd);
	return d;
}

static void assert_same(const char *a, const char *b, const struct hostkey_dest *dests, size_t n)
{
	struct file_digest x = digest_of(a, dests, n), y = digest_of(b, dests, n);

	assert_true(file_digest_equal(&x, &y));
}

static void assert_differ(const char *a, const char *b, const struct hostkey_dest *dests, size_t n)
{
	struct file_digest x = digest_of(a, dests, n), y = digest_of(b, dests, n);

	assert_false(file_digest_equal(&x, &y));
}

/* Lines for other hosts, comments and blank lines do not matter to a destination. */
static void test_other_hosts_do_not_count(void **state)
{
	const char *base = "db.example.com ssh-ed25519 " KEY_A "\n";

	assert_same(base,
		    "# a note\n\n"
		    "db.example.com ssh-ed25519 " KEY_A "\n"
		    "other.example.com ssh-ed25519 " KEY_B "\n"
		    "[db.example.com]:2222 ssh-ed25519 " KEY_B "\n",
		    &db, 1);
	/* an empty file and one with only other hosts are the same to db */
	assert_same("", "other.example.com ssh-ed25519 " KEY_B "\n", &db, 1);
}

/* A changed, added or removed key of the destination changes the digest. */
static void test_own_lines_count(void **state)
{
	const char *base = "db.example.com ssh-ed25519 " KEY_A "\n";

	assert_differ(base, "db.example.com ssh-ed25519 " KEY_B "\n", &db, 1);
	assert_differ(base, "", &db, 1);
	assert_differ(base, "db.example.com,db2.example.com ssh-ed25519 " KEY_A "\n", &db, 1);
	/* a bracketed host:port line names the host on that port only */
	assert_differ("", "[10.0.0.5]:2222 ssh-ed25519 " KEY_A "\n", &db2222, 1);
	assert_same("", "[10.0.0.5]:2223 ssh-ed25519 " KEY_A "\n", &db2222, 1);
	/* libssh2 1.10 also takes a bare host's line for any port (OpenSSH would not): what
	 * decides the connection is libssh2's reading, so it counts */
	assert_differ("", "10.0.0.5 ssh-ed25519 " KEY_A "\n", &db2222, 1);
}

/* A bastion's line matters to the tunnel that goes through it. */
static void test_any_destination(void **state)
{
	const struct hostkey_dest both[] = {db, {"bastion.example.com", 22}};

	assert_differ("", "bastion.example.com ssh-ed25519 " KEY_A "\n", both, 2);
	assert_same("", "bastion.example.com ssh-ed25519 " KEY_A "\n", &db, 1);
}

/* A line libssh2 cannot parse fails every connection reading the file: it counts for all. */
static void test_unparsable_line_counts(void **state)
{
	assert_differ("", "other.example.com\n", &db, 1); /* a host without a key */
	assert_differ("", "db2.example.com ssh-ed25519\n", &db, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_other_hosts_do_not_count),
	    cmocka_unit_test(test_own_lines_count),
	    cmocka_unit_test(test_any_destination),
	    cmocka_unit_test(test_unparsable_line_counts),
	};
	int r;

	libssh2_init(0);
	r = cmocka_run_group_tests(tests, NULL, NULL);
	libssh2_exit();
	return r;
}
