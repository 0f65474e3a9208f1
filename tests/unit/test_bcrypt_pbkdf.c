#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "bcrypt_pbkdf.h"
#include "blowfish.h"

/* Decodes a hex string into `out`; returns the byte count. */
static size_t unhex(const char *hex, uint8_t *out, size_t out_size)
{
	size_t n = strlen(hex) / 2;

	assert_true(n <= out_size);
	for (size_t i = 0; i < n; i++) {
		unsigned byte;

		assert_int_equal(sscanf(hex + 2 * i, "%2x", &byte), 1);
		out[i] = (uint8_t)byte;
	}
	return n;
}

static void test_pi_table_anchors(void **state)
{
	struct blowfish bf;

	(void)state;
	blowfish_init(&bf);
	assert_int_equal(bf.p[0], 0x243F6A88);
	assert_int_equal(bf.p[1], 0x85A308D3);
	assert_int_equal(bf.p[17], 0x8979FB1B);
	assert_int_equal(bf.s[0][0], 0xD1310BA6);
	assert_int_equal(bf.s[0][255], 0x6E85076A);
	assert_int_equal(bf.s[1][0], 0x4B7A70E9);
	assert_int_equal(bf.s[2][0], 0xE93D5A68);
	assert_int_equal(bf.s[3][0], 0x3A39CE37);
	assert_int_equal(bf.s[3][255], 0x3AC372E6);
}

/* Eric Young's ECB vectors (the reference set Schneier distributes): key, plaintext, cipher. */
static void test_blowfish_known_answers(void **state)
{
	static const char *const vectors[][3] = {
	    {"0000000000000000", "0000000000000000", "4EF997456198DD78"},
	    {"FFFFFFFFFFFFFFFF", "FFFFFFFFFFFFFFFF", "51866FD5B85ECB8A"},
	    {"3000000000000000", "1000000000000001", "7D856F9A613063F2"},
	    {"1111111111111111", "1111111111111111", "2466DD878B963C9D"},
	    {"0123456789ABCDEF", "1111111111111111", "61F9C3802281B096"},
	    {"1111111111111111", "0123456789ABCDEF", "7D0CC630AFDA1EC7"},
	    {"FEDCBA9876543210", "0123456789ABCDEF", "0ACEAB0FC6A0A28D"},
	    {"7CA110454A1A6E57", "01A1D6D039776742", "59C68245EB05282B"},
	    {"0131D9619DC1376E", "5CD54CA83DEF57DA", "B1B8CC0B250F09A0"},
	    /* variable key length ("set_key" vectors) */
	    {"F0", "FEDCBA9876543210", "F9AD597C49DB005E"},
	    {"F0E1D2C3B4A59687", "FEDCBA9876543210", "E87A244E2CC85E82"},
	    {"F0E1D2C3B4A5968778695A4B3C2D1E0F", "FEDCBA9876543210", "93142887EE3BE15C"},
	    {"F0E1D2C3B4A5968778695A4B3C2D1E0F0011223344556677", "FEDCBA9876543210",
	     "05044B62FA52D080"},
	};
	struct blowfish bf;

	(void)state;
	for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
		uint8_t key[24], block[8], expected[8];
		size_t key_len = unhex(vectors[i][0], key, sizeof(key));
		uint32_t left, right;

		unhex(vectors[i][1], block, sizeof(block));
		unhex(vectors[i][2], expected, sizeof(expected));
		blowfish_set_key(&bf, key, key_len);
		left =
		    (uint32_t)block[0] << 24 | (uint32_t)block[1] << 16 | block[2] << 8 | block[3];
		right =
		    (uint32_t)block[4] << 24 | (uint32_t)block[5] << 16 | block[6] << 8 | block[7];
		blowfish_encrypt(&bf, &left, &right);
		assert_int_equal(left, (uint32_t)expected[0] << 24 | (uint32_t)expected[1] << 16 |
					   expected[2] << 8 | expected[3]);
		assert_int_equal(right, (uint32_t)expected[4] << 24 | (uint32_t)expected[5] << 16 |
					    expected[6] << 8 | expected[7]);
	}
}

/* OpenBSD's regress/lib/libutil/bcrypt_pbkdf vectors. */
static void test_bcrypt_pbkdf_known_answers(void **state)
{
	static const char lorem[] =
	    "Lorem ipsum dolor sit amet, consectetur adipisicing elit, sed do eiusmod tempor "
	    "incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud "
	    "exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. Duis aute "
	    "irure dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla "
	    "pariatur. Excepteur sint occaecat cupidatat non proident, sunt in culpa qui officia "
	    "deserunt mollit anim id est laborum.";
	static const struct {
		const char *password;
		size_t password_len;
		const char *salt;
		size_t salt_len;
		unsigned rounds;
		const char *expected;
	} vectors[] = {
	    {"password", 8, "salt", 4, 4,
	     "5bbf0cc293587f1c3635555c27796598d47e579071bf427e9d8fbe842aba34d9"},
	    {"password", 8, "\0", 1, 4, "c12b566235eee04c212598970a579a67"},
	    {"\0", 1, "salt", 4, 4, "6051be18c2f4f82cbf0efee5471b4bb9"},
	    {"password\0", 9, "salt\0", 5, 4,
	     "7410e44cf4fa07bfaac8a928b1727fac001375e7bf7384370f48efd121743050"},
	    {"pass\0wor", 8, "sa\0l", 4, 4, "c2bffd9db38f6569efef4372f4de83c0"},
	    {"pass\0word", 9, "sa\0lt", 5, 4, "4ba4ac3925c0e8d7f0cdb6bb1684a56f"},
	    {"password", 8, "salt", 4, 8,
	     "e1367ec5151a33faac4cc1c144cd23fa15d5548493ecc99b9b5d9c0d3b27bec76227ea66088b849b"
	     "20ab7aa478010246e74bba51723fefa9f9474d6508845e8d"},
	    {"password", 8, "salt", 4, 42, "833cf0dcf56db65608e8f0dc0ce882bd"},
	    {lorem, sizeof(lorem) - 1, "salis\0", 6, 8, "10978b07253df57f71a162eb0e8ad30a"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
		uint8_t expected[64], out[64];
		size_t len = unhex(vectors[i].expected, expected, sizeof(expected));

		assert_int_equal(bcrypt_pbkdf(vectors[i].password, vectors[i].password_len,
					      (const uint8_t *)vectors[i].salt, vectors[i].salt_len,
					      vectors[i].rounds, out, len),
				 0);
		assert_memory_equal(out, expected, len);
	}
}

static void test_bcrypt_pbkdf_rejects_bad_arguments(void **state)
{
	static const uint8_t salt[] = "salt";
	uint8_t out[BCRYPT_PBKDF_MAX_OUTPUT + 1];

	(void)state;
	memset(out, 0xAA, sizeof(out));
	assert_int_equal(bcrypt_pbkdf("", 0, salt, 4, 4, out, 32), -EINVAL);
	assert_int_equal(bcrypt_pbkdf("pw", 2, salt, 0, 4, out, 32), -EINVAL);
	assert_int_equal(bcrypt_pbkdf("pw", 2, salt, 4, 0, out, 32), -EINVAL);
	assert_int_equal(bcrypt_pbkdf("pw", 2, salt, 4, 4, out, 0), -EINVAL);
	assert_int_equal(bcrypt_pbkdf("pw", 2, salt, 4, 4, out, sizeof(out)), -EINVAL);
	for (size_t i = 0; i < sizeof(out); i++)
		assert_int_equal(out[i], 0xAA);
	assert_int_equal(bcrypt_pbkdf("pw", 2, salt, 4, 1, out, BCRYPT_PBKDF_MAX_OUTPUT), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_pi_table_anchors),
	    cmocka_unit_test(test_blowfish_known_answers),
	    cmocka_unit_test(test_bcrypt_pbkdf_known_answers),
	    cmocka_unit_test(test_bcrypt_pbkdf_rejects_bad_arguments),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
