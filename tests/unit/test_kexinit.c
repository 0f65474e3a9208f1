#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kexinit.h"
#include "util.h"

/* Captured from OpenSSH 9.2p1's sshd (Debian 12) with its default algorithms. */
#define CAPTURE_DEFAULT "fuzz/corpus/kexinit/openssh-9.2-default"

struct bytes {
	uint8_t data[4096];
	size_t len;
};

static void put(struct bytes *b, const void *p, size_t n)
{
	assert_true(b->len + n <= sizeof(b->data));
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

static void put_u32(struct bytes *b, uint32_t v)
{
	uint8_t p[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};

	put(b, p, 4);
}

/* A KEXINIT payload with the given lists (NULL: empty). */
static void put_payload(struct bytes *b, const char *const lists[KEXINIT_N_LISTS])
{
	static const uint8_t cookie[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
	uint8_t msg = SSH_MSG_KEXINIT, follows = 0;

	put(b, &msg, 1);
	put(b, cookie, sizeof(cookie));
	for (size_t i = 0; i < KEXINIT_N_LISTS; i++) {
		const char *l = lists[i] ? lists[i] : "";

		put_u32(b, (uint32_t)strlen(l));
		put(b, l, strlen(l));
	}
	put(b, &follows, 1);
	put_u32(b, 0);
}

/* Version text, then a binary packet around `payload` with 4 bytes of padding. */
static struct bytes *server_bytes(const char *before, const struct bytes *payload)
{
	struct bytes *b = calloc(1, sizeof(*b));
	uint8_t padding = 4, zeros[4] = {0};

	assert_non_null(b);
	put(b, before, strlen(before));
	put_u32(b, (uint32_t)(payload->len + 1 + padding));
	put(b, &padding, 1);
	put(b, payload->data, payload->len);
	put(b, zeros, padding);
	return b;
}

static const char *const typical[KEXINIT_N_LISTS] = {
    "curve25519-sha256,diffie-hellman-group14-sha1",
    "ssh-ed25519,rsa-sha2-512",
    "aes128-ctr,aes256-cbc",
    "aes128-ctr",
    "hmac-sha2-256,hmac-sha1",
    "hmac-sha2-256",
    "none,zlib@openssh.com",
    "none",
    NULL,
    NULL,
};

static struct bytes *typical_server(const char *before)
{
	struct bytes payload = {.len = 0};

	put_payload(&payload, typical);
	return server_bytes(before, &payload);
}

static void test_builds_lists(void **state)
{
	struct bytes *b = typical_server("SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n");
	struct kexinit k = {0};

	(void)state;
	assert_int_equal(kexinit_scan(b->data, b->len, &k), 0);
	assert_string_equal(k.version, "SSH-2.0-OpenSSH_9.2p1 Debian-2");
	for (size_t i = 0; i < KEXINIT_N_LISTS; i++)
		assert_string_equal(k.lists[i], typical[i] ? typical[i] : "");
	assert_false(k.first_kex_packet_follows);
	kexinit_free(&k);
	kexinit_free(&k); /* twice is fine */
	free(b);
}

static void test_real_capture(void **state)
{
	struct kexinit k = {0};
	char *data;
	size_t len;

	(void)state;
	assert_int_equal(read_file(CAPTURE_DEFAULT, 1 << 20, &data, &len), 0);
	assert_int_equal(kexinit_scan((uint8_t *)data, len, &k), 0);
	assert_true(strncmp(k.version, "SSH-2.0-OpenSSH_9.2", 19) == 0);
	assert_true(kexinit_list_has(k.lists[KEXINIT_KEX], "curve25519-sha256"));
	assert_true(kexinit_list_has(k.lists[KEXINIT_HOSTKEY], "ssh-ed25519"));
	assert_true(kexinit_list_has(k.lists[KEXINIT_CIPHER_S2C], "aes128-ctr"));
	/* OpenSSH 9.2 still offers hmac-sha1 by default, and no longer ssh-rsa signatures */
	assert_true(kexinit_list_has(k.lists[KEXINIT_MAC_S2C], "hmac-sha1"));
	assert_false(kexinit_list_has(k.lists[KEXINIT_HOSTKEY], "ssh-rsa"));
	assert_string_equal(k.lists[KEXINIT_LANGUAGE_C2S], "");
	kexinit_free(&k);
	free(data);
}

/* Every proper prefix asks for more; the first byte that completes it finishes. */
static void test_every_prefix_waits(void **state)
{
	struct bytes *b = typical_server("SSH-2.0-x\r\n");
	struct kexinit k;

	(void)state;
	for (size_t n = 0; n < b->len; n++) {
		memset(&k, 0x5a, sizeof(k));
		assert_int_equal(kexinit_scan(b->data, n, &k), -EAGAIN);
		assert_int_equal(((uint8_t *)&k)[0], 0x5a);
	}
	memset(&k, 0, sizeof(k));
	assert_int_equal(kexinit_scan(b->data, b->len, &k), 0);
	kexinit_free(&k);
	free(b);
}

static void test_version_line_forms(void **state)
{
	static const struct {
		const char *before;
		int r;
		const char *version;
	} cases[] = {
	    /* RFC 4253 4.2: other lines may come first */
	    {"Welcome\r\nno SSH here\r\nSSH-2.0-x y\r\n", 0, "SSH-2.0-x y"},
	    /* LF alone, as OpenSSH accepts */
	    {"SSH-2.0-lf\n", 0, "SSH-2.0-lf"},
	    {"SSH-1.99-compat\r\n", 0, "SSH-1.99-compat"},
	    {"SSH-1.5-old\r\n", -EPROTO, NULL},
	    {"SSH-3.0-future\r\n", -EPROTO, NULL},
	    {"SSH-2.0-tab\there\r\n", -EINVAL, NULL},
	    {"SSH-2.0-esc\x1b[31m\r\n", -EINVAL, NULL},
	    {"SSH-2.0-high\xc3\xa9\r\n", -EINVAL, NULL},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct bytes *b = typical_server(cases[i].before);
		struct kexinit k = {0};
		int r = kexinit_scan(b->data, b->len, &k);

		if (r != cases[i].r)
			fail_msg("case %zu: %d, expected %d", i, r, cases[i].r);
		if (r == 0)
			assert_string_equal(k.version, cases[i].version);
		kexinit_free(&k);
		free(b);
	}
}

static void test_version_line_length(void **state)
{
	char line[400];
	struct bytes *b;
	struct kexinit k = {0};

	(void)state;
	/* 253 characters + CR LF = 255: the longest allowed */
	memset(line, 'v', sizeof(line));
	memcpy(line, "SSH-2.0-", 8);
	memcpy(line + 253, "\r\n", 3);
	b = typical_server(line);
	assert_int_equal(kexinit_scan(b->data, b->len, &k), 0);
	assert_int_equal(strlen(k.version), 253);
	kexinit_free(&k);
	free(b);
	memset(line, 'v', sizeof(line));
	memcpy(line, "SSH-2.0-", 8);
	memcpy(line + 254, "\r\n", 3);
	b = typical_server(line);
	assert_int_equal(kexinit_scan(b->data, b->len, &k), -EINVAL);
	/* without its end yet, too long already */
	assert_int_equal(kexinit_scan(b->data, 255, &k), -EINVAL);
	assert_int_equal(kexinit_scan(b->data, 254, &k), -EAGAIN);
	free(b);
}

static void test_endless_banner(void **state)
{
	uint8_t *junk = malloc(KEXINIT_INPUT_MAX + 10);
	struct kexinit k;

	(void)state;
	assert_non_null(junk);
	memset(junk, 'x', KEXINIT_INPUT_MAX + 10);
	assert_int_equal(kexinit_scan(junk, 1000, &k), -EAGAIN);
	assert_int_equal(kexinit_scan(junk, KEXINIT_INPUT_MAX + 10, &k), -E2BIG);
	/* short lines forever */
	for (size_t i = 0; i < KEXINIT_INPUT_MAX + 10; i += 2)
		memcpy(junk + i, "x\n", 2);
	assert_int_equal(kexinit_scan(junk, KEXINIT_INPUT_MAX + 10, &k), -E2BIG);
	free(junk);
}

static void test_packet_framing(void **state)
{
	struct bytes payload = {.len = 0};
	struct bytes *b;
	struct kexinit k = {0};
	size_t at = strlen("SSH-2.0-x\r\n");

	(void)state;
	put_payload(&payload, typical);
	b = server_bytes("SSH-2.0-x\r\n", &payload);
	/* a length past the limit is refused before waiting for it */
	b->data[at] = 0x7f;
	assert_int_equal(kexinit_scan(b->data, at + 5, &k), -E2BIG);
	b->data[at] = 0;
	/* padding that leaves no payload */
	b->data[at + 4] = (uint8_t)(payload.len + 1 + 4);
	assert_int_equal(kexinit_scan(b->data, b->len, &k), -EINVAL);
	b->data[at + 4] = 4;
	assert_int_equal(kexinit_scan(b->data, b->len, &k), 0);
	kexinit_free(&k);
	/* the first packet is something else */
	b->data[at + 5] = 21;
	assert_int_equal(kexinit_scan(b->data, b->len, &k), -EPROTO);
	free(b);
}

static void test_payload_errors(void **state)
{
	struct bytes payload = {.len = 0};
	struct kexinit k;
	static const char *const bad_names[] = {"a b", "tab\t", "nul\x01", "high\x80"};

	(void)state;
	put_payload(&payload, typical);
	memset(&k, 0, sizeof(k));
	/* cut anywhere before the reserved field ends: malformed */
	for (size_t n = 1; n < payload.len - 4; n++)
		assert_int_equal(kexinit_parse_payload(payload.data, n, &k), -EINVAL);
	for (size_t i = 0; i < KEXINIT_N_LISTS; i++)
		assert_null(k.lists[i]);
	assert_int_equal(kexinit_parse_payload(payload.data, 0, &k), -EPROTO);
	/* a list length running past the end */
	payload.data[1 + 16] = 0x10;
	assert_int_equal(kexinit_parse_payload(payload.data, payload.len, &k), -EINVAL);
	for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
		const char *lists[KEXINIT_N_LISTS] = {"curve25519-sha256"};
		struct bytes p = {.len = 0};

		lists[KEXINIT_MAC_S2C] = bad_names[i];
		put_payload(&p, lists);
		assert_int_equal(kexinit_parse_payload(p.data, p.len, &k), -EINVAL);
	}
}

static void test_names(void **state)
{
	const char *cursor, *name;
	size_t len, n = 0;

	(void)state;
	assert_true(kexinit_list_has("hmac-sha1-etm@openssh.com,hmac-sha1", "hmac-sha1"));
	assert_false(kexinit_list_has("hmac-sha1-etm@openssh.com", "hmac-sha1"));
	assert_false(kexinit_list_has("hmac-sha1", "hmac-sha1-etm@openssh.com"));
	assert_false(kexinit_list_has("", "none"));
	assert_true(kexinit_list_has(",,none,", "none"));
	cursor = "a,,bb,ccc";
	while (kexinit_next_name(&cursor, &name, &len))
		n += len;
	assert_int_equal(n, 6);
	assert_string_equal(kexinit_list_name(KEXINIT_HOSTKEY), "server_host_key_algorithms");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_builds_lists),
	    cmocka_unit_test(test_real_capture),
	    cmocka_unit_test(test_every_prefix_waits),
	    cmocka_unit_test(test_version_line_forms),
	    cmocka_unit_test(test_version_line_length),
	    cmocka_unit_test(test_endless_banner),
	    cmocka_unit_test(test_packet_framing),
	    cmocka_unit_test(test_payload_errors),
	    cmocka_unit_test(test_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
