#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "sshkey.h"
#include "util.h"

#define PASS "correct horse"

/*
 * Keys made by ssh-keygen in a fresh directory for this run. The first three use ssh-keygen's
 * defaults (aes256-ctr, 16 bcrypt rounds); the cipher variants use 1 round to keep the run
 * short under sanitizers (the KDF itself has known-answer tests in test_bcrypt_pbkdf).
 */
static const struct key_spec {
	const char *name;
	const char *type;
	int bits;	    /* 0: ssh-keygen's default */
	const char *cipher; /* NULL: unencrypted */
	int rounds;	    /* 0: ssh-keygen's default */
} key_specs[] = {
    {"ed25519", "ed25519", 0, "aes256-ctr", 0},
    {"ecdsa", "ecdsa", 256, "aes256-ctr", 0},
    {"rsa", "rsa", 2048, "aes256-ctr", 0},
    {"ed25519_aes128-ctr", "ed25519", 0, "aes128-ctr", 1},
    {"ed25519_aes192-ctr", "ed25519", 0, "aes192-ctr", 1},
    {"ed25519_aes128-cbc", "ed25519", 0, "aes128-cbc", 1},
    {"ed25519_aes192-cbc", "ed25519", 0, "aes192-cbc", 1},
    {"ed25519_aes256-cbc", "ed25519", 0, "aes256-cbc", 1},
    {"ecdsa_aes128-cbc", "ecdsa", 256, "aes128-cbc", 1},
    {"ed25519_3des-cbc", "ed25519", 0, "3des-cbc", 1},
    {"ed25519_aes128-gcm", "ed25519", 0, "aes128-gcm@openssh.com", 1},
    {"ed25519_aes256-gcm", "ed25519", 0, "aes256-gcm@openssh.com", 1},
    {"ed25519_chacha20-poly1305", "ed25519", 0, "chacha20-poly1305@openssh.com", 1},
    {"ed25519_plain", "ed25519", 0, NULL, 0},
};

#define KEY_COUNT (sizeof(key_specs) / sizeof(key_specs[0]))

struct fixture {
	char dir[64];
	char *pem[KEY_COUNT];
	size_t pem_len[KEY_COUNT];
};

static size_t key_index(const char *name)
{
	for (size_t i = 0; i < KEY_COUNT; i++)
		if (strcmp(key_specs[i].name, name) == 0)
			return i;
	fail_msg("no key %s", name);
	return 0;
}

static void key_path(const struct fixture *f, const char *name, char *out, size_t out_size)
{
	assert_true((size_t)snprintf(out, out_size, "%s/%s", f->dir, name) < out_size);
}

/* Runs a shell command and returns its first output line (newline stripped), or "" */
static void run_line(const char *cmd, char *out, size_t out_size)
{
	FILE *p = popen(cmd, "r");

	assert_non_null(p);
	out[0] = '\0';
	if (!fgets(out, (int)out_size, p))
		out[0] = '\0';
	out[strcspn(out, "\n")] = '\0';
	pclose(p);
}

static void write_secret_file(const char *path, const char *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write_all(fd, data, len), 0);
	close(fd);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char cmd[512], path[128], options[160];

	if (!f)
		return -1;
	strcpy(f->dir, "/tmp/moletun-sshkey-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	for (size_t i = 0; i < KEY_COUNT; i++) {
		const struct key_spec *k = &key_specs[i];

		key_path(f, k->name, path, sizeof(path));
		snprintf(options, sizeof(options), "-t %s", k->type);
		if (k->bits)
			snprintf(options + strlen(options), sizeof(options) - strlen(options),
				 " -b %d", k->bits);
		if (k->cipher)
			snprintf(options + strlen(options), sizeof(options) - strlen(options),
				 " -Z %s", k->cipher);
		if (k->rounds)
			snprintf(options + strlen(options), sizeof(options) - strlen(options),
				 " -a %d", k->rounds);
		snprintf(cmd, sizeof(cmd),
			 "ssh-keygen -q %s -N '%s' -C 'moletun test %s' -f '%s' </dev/null",
			 options, k->cipher ? PASS : "", k->name, path);
		if (system(cmd) != 0) {
			fprintf(stderr, "failed: %s\n", cmd);
			return -1;
		}
		if (read_file(path, 64 * 1024, &f->pem[i], &f->pem_len[i]) < 0)
			return -1;
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[128];

	for (size_t i = 0; i < KEY_COUNT; i++)
		free_secret(f->pem[i], f->pem_len[i]);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", f->dir);
	free(f);
	return 0;
}

/* The output is ssh-keygen's armour: BEGIN line, base64 lines of at most 70, END line. */
static void assert_armour(const char *pem, size_t len)
{
	const char *line = pem;

	assert_int_equal(strlen(pem), len);
	assert_true(strncmp(pem, "-----BEGIN OPENSSH PRIVATE KEY-----\n", 36) == 0);
	assert_true(len > 34 && strcmp(pem + len - 34, "-----END OPENSSH PRIVATE KEY-----\n") == 0);
	while (*line) {
		size_t n = strcspn(line, "\n");

		assert_true(n <= 70 || line == pem);
		line += n + 1;
	}
}

/* Decrypts key `name` and proves it with OpenSSH: same public key, no passphrase needed. */
static void assert_decrypts(const struct fixture *f, const char *name)
{
	size_t i = key_index(name);
	char original[128], out_path[160], cmd[512], expected[2048], got[2048];
	char *plain = NULL;
	size_t plain_len = 0;

	key_path(f, name, original, sizeof(original));
	snprintf(out_path, sizeof(out_path), "%s.decrypted", original);
	assert_int_equal(sshkey_decrypt_openssh(f->pem[i], f->pem_len[i], PASS, strlen(PASS),
						&plain, &plain_len),
			 0);
	assert_armour(plain, plain_len);
	assert_null(strstr(plain, "Proc-Type"));
	write_secret_file(out_path, plain, plain_len);

	snprintf(cmd, sizeof(cmd), "ssh-keygen -y -P '%s' -f '%s' 2>&1", PASS, original);
	run_line(cmd, expected, sizeof(expected));
	snprintf(cmd, sizeof(cmd), "ssh-keygen -y -P '' -f '%s' 2>&1", out_path);
	run_line(cmd, got, sizeof(got));
	assert_true(strncmp(expected, "ssh-", 4) == 0 || strncmp(expected, "ecdsa-", 6) == 0);
	assert_string_equal(got, expected);

	/* decrypting our output again is the identity */
	{
		char *again = NULL;
		size_t again_len = 0;

		assert_int_equal(
		    sshkey_decrypt_openssh(plain, plain_len, NULL, 0, &again, &again_len), 0);
		assert_int_equal(again_len, plain_len);
		assert_memory_equal(again, plain, plain_len);
		free_secret(again, again_len);
	}
	free_secret(plain, plain_len);
}

static void test_ed25519_default_cipher(void **state)
{
	assert_decrypts(*state, "ed25519");
}

static void test_ecdsa_default_cipher(void **state)
{
	assert_decrypts(*state, "ecdsa");
}

static void test_rsa_default_cipher(void **state)
{
	assert_decrypts(*state, "rsa");
}

static void test_every_cipher(void **state)
{
	for (size_t i = 0; i < KEY_COUNT; i++)
		if (key_specs[i].cipher && key_specs[i].rounds)
			assert_decrypts(*state, key_specs[i].name);
}

/* Wrong passphrases fail with -EACCES for every cipher, leaving the outputs alone. */
static void test_wrong_passphrase(void **state)
{
	struct fixture *f = *state;
	char *out = (char *)0x1;
	size_t out_len = 77;

	for (size_t i = 0; i < KEY_COUNT; i++) {
		if (!key_specs[i].cipher)
			continue;
		assert_int_equal(
		    sshkey_decrypt_openssh(f->pem[i], f->pem_len[i], "wrong", 5, &out, &out_len),
		    -EACCES);
		assert_int_equal(
		    sshkey_decrypt_openssh(f->pem[i], f->pem_len[i], PASS, 3, &out, &out_len),
		    -EACCES);
		assert_int_equal(
		    sshkey_decrypt_openssh(f->pem[i], f->pem_len[i], NULL, 0, &out, &out_len),
		    -EACCES);
		assert_int_equal(
		    sshkey_decrypt_openssh(f->pem[i], f->pem_len[i], "", 0, &out, &out_len),
		    -EACCES);
	}
	assert_ptr_equal(out, (char *)0x1);
	assert_int_equal(out_len, 77);
}

static void test_unencrypted_is_copied(void **state)
{
	struct fixture *f = *state;
	size_t i = key_index("ed25519_plain");
	char *out = NULL;
	size_t out_len = 0;

	assert_int_equal(sshkey_decrypt_openssh(f->pem[i], f->pem_len[i], NULL, 0, &out, &out_len),
			 0);
	assert_int_equal(out_len, f->pem_len[i]);
	assert_memory_equal(out, f->pem[i], out_len);
	assert_int_equal(out[out_len], '\0');
	assert_ptr_not_equal(out, f->pem[i]);
	free_secret(out, out_len);

	/* a passphrase given for an unencrypted key is ignored, as ssh does */
	assert_int_equal(
	    sshkey_decrypt_openssh(f->pem[i], f->pem_len[i], PASS, strlen(PASS), &out, &out_len),
	    0);
	assert_memory_equal(out, f->pem[i], out_len);
	free_secret(out, out_len);
}

/* Decodes the armoured key `i` of the fixture into a heap blob. */
static uint8_t *fixture_blob(const struct fixture *f, size_t i, size_t *ret_len)
{
	const char *begin = strstr(f->pem[i], "-----BEGIN OPENSSH PRIVATE KEY-----") + 35;
	const char *end = strstr(begin, "-----END");
	uint8_t *blob = malloc(f->pem_len[i]);
	ssize_t n;

	assert_non_null(blob);
	n = base64_decode(begin, (size_t)(end - begin), blob, f->pem_len[i]);
	assert_true(n > 0);
	*ret_len = (size_t)n;
	return blob;
}

/* Wraps a blob in the armour (one long base64 line: the parser does not care). */
static char *armour(const uint8_t *blob, size_t len, size_t *ret_len)
{
	size_t size = 36 + (len + 2) / 3 * 4 + 1 + 34 + 1;
	char *pem = malloc(size);

	assert_non_null(pem);
	strcpy(pem, "-----BEGIN OPENSSH PRIVATE KEY-----\n");
	base64_encode(blob, len, pem + 36, size - 36, true);
	strcat(pem, "\n-----END OPENSSH PRIVATE KEY-----\n");
	*ret_len = strlen(pem);
	return pem;
}

static int decrypt_blob(const uint8_t *blob, size_t len, const char *passphrase)
{
	size_t pem_len, out_len = 0;
	char *pem = armour(blob, len, &pem_len);
	char *out = NULL;
	int r;

	r = sshkey_decrypt_openssh(pem, pem_len, passphrase, passphrase ? strlen(passphrase) : 0,
				   &out, &out_len);
	if (r == 0)
		free_secret(out, out_len);
	else
		assert_null(out);
	free(pem);
	return r;
}

/* Every proper prefix of a valid blob is malformed, for a plain, an AEAD and a clear key. */
static void test_truncated_blob(void **state)
{
	static const char *const names[] = {"ed25519", "ed25519_aes256-gcm", "ed25519_plain"};
	struct fixture *f = *state;

	for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
		size_t len;
		uint8_t *blob = fixture_blob(f, key_index(names[k]), &len);

		assert_int_equal(decrypt_blob(blob, len, PASS), 0);
		/* the prefix is copied to an exact-size buffer so ASan sees any over-read */
		for (size_t n = 0; n < len; n++) {
			uint8_t *prefix = malloc(n ? n : 1);

			assert_non_null(prefix);
			memcpy(prefix, blob, n);
			assert_int_equal(decrypt_blob(prefix, n, PASS), -EINVAL);
			free(prefix);
		}
		free(blob);
	}
}

static void test_truncated_text(void **state)
{
	struct fixture *f = *state;
	size_t i = key_index("ed25519");
	char *out = NULL;
	size_t out_len = 0;

	/* cutting into the END line or earlier loses the armour */
	for (size_t n = 0; n < f->pem_len[i] - 2; n++) {
		char *copy = malloc(n ? n : 1);

		assert_non_null(copy);
		memcpy(copy, f->pem[i], n);
		assert_int_equal(
		    sshkey_decrypt_openssh(copy, n, PASS, strlen(PASS), &out, &out_len), -EINVAL);
		free(copy);
	}
	assert_null(out);
}

/*
 * Flipping any byte must give a clean result or error, never a crash or over-read. The bcrypt
 * rounds field is left alone: a flipped high byte asks for hours of KDF, which is legal.
 */
static void test_corrupted_bytes(void **state)
{
	static const char cipher[] = "chacha20-poly1305@openssh.com";
	/* magic, cipher name, "bcrypt", kdf options length, then the 16-byte salt string */
	const size_t rounds_at = 15 + 4 + strlen(cipher) + 4 + 6 + 4 + 4 + 16;
	struct fixture *f = *state;
	size_t len;
	uint8_t *blob = fixture_blob(f, key_index("ed25519_chacha20-poly1305"), &len);

	assert_int_equal(blob[rounds_at + 3], 1);
	for (size_t n = 0; n < len; n++) {
		int r;

		if (n >= rounds_at && n < rounds_at + 4)
			continue;
		blob[n] ^= 0x5a;
		r = decrypt_blob(blob, len, PASS);
		assert_true(r == 0 || r == -EINVAL || r == -EACCES || r == -ENOTSUP);
		/* the AEAD tag covers the whole private section */
		if (n >= len - 16 - 8)
			assert_int_equal(r, -EACCES);
		blob[n] ^= 0x5a;
	}
	free(blob);
}

static void test_garbage(void **state)
{
	static const char *const inputs[] = {
	    "",
	    "hello",
	    "-----BEGIN OPENSSH PRIVATE KEY-----\n",
	    "-----BEGIN OPENSSH PRIVATE KEY-----\n-----END OPENSSH PRIVATE KEY-----\n",
	    "-----BEGIN OPENSSH PRIVATE KEY-----\n!!!!\n-----END OPENSSH PRIVATE KEY-----\n",
	    "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
	    "-----END OPENSSH PRIVATE KEY-----\n-----BEGIN OPENSSH PRIVATE KEY-----\n",
	    "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n"
	    "DEK-Info: AES-128-CBC,00000000000000000000000000000000\n\nAAAA\n"
	    "-----END RSA PRIVATE KEY-----\n",
	};
	uint8_t random_bytes[4096];
	char *out = NULL;
	size_t out_len = 0;

	(void)state;
	for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++)
		assert_int_equal(sshkey_decrypt_openssh(inputs[i], strlen(inputs[i]), PASS,
							strlen(PASS), &out, &out_len),
				 -EINVAL);
	assert_int_equal(sshkey_decrypt_openssh(NULL, 0, PASS, strlen(PASS), &out, &out_len),
			 -EINVAL);
	srand(1);
	for (int round = 0; round < 200; round++) {
		size_t len = (size_t)(rand() % (int)sizeof(random_bytes));

		for (size_t i = 0; i < len; i++)
			random_bytes[i] = (uint8_t)rand();
		assert_int_equal(sshkey_decrypt_openssh((const char *)random_bytes, len, PASS,
							strlen(PASS), &out, &out_len),
				 -EINVAL);
		assert_int_equal(decrypt_blob(random_bytes, len, PASS), -EINVAL);
	}
	assert_null(out);
}

static uint8_t *put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
	return p + 4;
}

/* Appends an SSH string to a blob under construction. */
static uint8_t *put_string(uint8_t *p, const void *s, uint32_t len)
{
	p = put_u32(p, len);
	memcpy(p, s, len);
	return p + len;
}

static int decrypt_built(const char *cipher, const char *kdf, const void *kdf_options,
			 uint32_t kdf_options_len, uint32_t keys, uint32_t private_len,
			 uint32_t trailer_len)
{
	uint8_t blob[512] = "openssh-key-v1", section[64] = {0}, *p = blob + 15;

	assert_true(private_len <= sizeof(section));
	p = put_string(p, cipher, (uint32_t)strlen(cipher));
	p = put_string(p, kdf, (uint32_t)strlen(kdf));
	p = put_string(p, kdf_options, kdf_options_len);
	p = put_u32(p, keys);
	p = put_string(p, "\0\0\0\x0bssh-ed25519", 15);
	p = put_string(p, section, private_len);
	memset(p, 0, trailer_len);
	return decrypt_blob(blob, (size_t)(p + trailer_len - blob), PASS);
}

static void test_structure_checks(void **state)
{
	/* salt "0123456789abcdef", 1 round */
	static const uint8_t bcrypt_options[] = "\0\0\0\x10"
						"0123456789abcdef"
						"\0\0\0\x01";
	static const uint8_t zero_rounds[] = "\0\0\0\x10"
					     "0123456789abcdef"
					     "\0\0\0\0";
	const uint32_t options_len = sizeof(bcrypt_options) - 1;

	(void)state;
	/* an all-zero section has equal check ints: a valid (if odd) unencrypted key */
	assert_int_equal(decrypt_built("none", "none", "", 0, 1, 16, 0), 0);
	assert_int_equal(decrypt_built("none", "none", "", 0, 2, 16, 0), -EINVAL);
	assert_int_equal(decrypt_built("none", "none", "", 0, 1, 12, 0), -EINVAL);
	assert_int_equal(decrypt_built("none", "none", "", 0, 1, 16, 1), -EINVAL);
	assert_int_equal(decrypt_built("none", "bcrypt", bcrypt_options, options_len, 1, 16, 0),
			 -EINVAL);
	assert_int_equal(decrypt_built("aes256-ctr", "none", "", 0, 1, 16, 0), -EINVAL);
	assert_int_equal(
	    decrypt_built("twofish256-ctr", "bcrypt", bcrypt_options, options_len, 1, 16, 0),
	    -ENOTSUP);
	assert_int_equal(
	    decrypt_built("aes256-ctr", "scrypt", bcrypt_options, options_len, 1, 16, 0), -ENOTSUP);
	assert_int_equal(decrypt_built("aes256-ctr", "bcrypt", zero_rounds, options_len, 1, 16, 0),
			 -EINVAL);
	assert_int_equal(
	    decrypt_built("aes256-ctr", "bcrypt", bcrypt_options, options_len - 1, 1, 16, 0),
	    -EINVAL);
	assert_int_equal(
	    decrypt_built("aes256-ctr", "bcrypt", bcrypt_options, options_len, 1, 24, 0), -EINVAL);
	assert_int_equal(
	    decrypt_built("aes256-ctr", "bcrypt", bcrypt_options, options_len, 1, 0, 0), -EINVAL);
	assert_int_equal(decrypt_built("aes256-gcm@openssh.com", "bcrypt", bcrypt_options,
				       options_len, 1, 16, 15),
			 -EINVAL);
	/* well-formed, but random bytes under a real KDF: the check ints differ */
	assert_int_equal(
	    decrypt_built("aes256-ctr", "bcrypt", bcrypt_options, options_len, 1, 16, 0), -EACCES);
	assert_int_equal(decrypt_built("aes256-gcm@openssh.com", "bcrypt", bcrypt_options,
				       options_len, 1, 16, 16),
			 -EACCES);
}

/*
 * The rounds come from the key file: a key asking for 2^32 rounds must be refused at once,
 * not run for years; the cap itself and one round above it are told apart.
 */
static void test_rounds_capped(void **state)
{
	static const uint8_t huge_rounds[] = "\0\0\0\x10"
					     "0123456789abcdef"
					     "\xff\xff\xff\xff";
	static const uint8_t above_cap[] = "\0\0\0\x10"
					   "0123456789abcdef"
					   "\0\0\x01\xf5"; /* 501 */
	const uint32_t options_len = sizeof(huge_rounds) - 1;
	struct timespec start, end;
	double seconds;

	(void)state;
	assert_int_equal(SSHKEY_BCRYPT_ROUNDS_MAX, 500);
	clock_gettime(CLOCK_MONOTONIC, &start);
	assert_int_equal(
	    decrypt_built("aes256-ctr", "bcrypt", huge_rounds, options_len, 1, 16, 0), -ERANGE);
	assert_int_equal(
	    decrypt_built("aes256-ctr", "bcrypt", above_cap, options_len, 1, 16, 0), -ERANGE);
	assert_int_equal(decrypt_built("chacha20-poly1305@openssh.com", "bcrypt", huge_rounds,
				       options_len, 1, 16, 16),
			 -ERANGE);
	clock_gettime(CLOCK_MONOTONIC, &end);
	seconds = (double)(end.tv_sec - start.tv_sec) + (double)(end.tv_nsec - start.tv_nsec) / 1e9;
	/* refused before the KDF: 501 rounds alone would take about 3 s */
	assert_true(seconds < 0.5);
}

/* Not an assertion: how long one decryption takes at ssh-keygen's default 16 rounds. */
static void test_report_decrypt_time(void **state)
{
	struct fixture *f = *state;

	for (size_t i = 0; i < KEY_COUNT; i++) {
		double best_ms = 0;

		if (!key_specs[i].cipher || key_specs[i].rounds ||
		    strcmp(key_specs[i].type, "rsa") == 0)
			continue;
		for (int run = 0; run < 3; run++) {
			struct timespec start, end;
			char *out = NULL;
			size_t out_len = 0;
			double ms;

			clock_gettime(CLOCK_MONOTONIC, &start);
			assert_int_equal(sshkey_decrypt_openssh(f->pem[i], f->pem_len[i], PASS,
								strlen(PASS), &out, &out_len),
					 0);
			clock_gettime(CLOCK_MONOTONIC, &end);
			free_secret(out, out_len);
			ms = (double)(end.tv_sec - start.tv_sec) * 1e3 +
			     (double)(end.tv_nsec - start.tv_nsec) / 1e6;
			if (run == 0 || ms < best_ms)
				best_ms = ms;
		}
		printf("decrypt %s key (%s, bcrypt 16 rounds): %.1f ms (best of 3)\n",
		       key_specs[i].name, key_specs[i].cipher, best_ms);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ed25519_default_cipher),
	    cmocka_unit_test(test_ecdsa_default_cipher),
	    cmocka_unit_test(test_rsa_default_cipher),
	    cmocka_unit_test(test_every_cipher),
	    cmocka_unit_test(test_wrong_passphrase),
	    cmocka_unit_test(test_unencrypted_is_copied),
	    cmocka_unit_test(test_truncated_blob),
	    cmocka_unit_test(test_truncated_text),
	    cmocka_unit_test(test_corrupted_bytes),
	    cmocka_unit_test(test_garbage),
	    cmocka_unit_test(test_structure_checks),
	    cmocka_unit_test(test_rounds_capped),
	    cmocka_unit_test(test_report_decrypt_time),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
