#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "identity.h"
#include "sshkey.h"
#include "util.h"

/* The seeds in corpus/sshkey are encrypted with this passphrase (ssh-keygen -N fuzz -a 1). */
#define PASSPHRASE "fuzz"

/*
 * A key file's text, as identity_load() reads it, to sshkey_decrypt_openssh() and to the
 * public-half parser identity_read_public(). The first byte chooses the passphrase: the
 * seeds' own, a wrong one, or none. Invariants: only the documented errors; a decrypted key
 * is an unencrypted OpenSSH key that decrypts to an exact copy of itself and has the same
 * public half as its input.
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const passphrases[] = {PASSPHRASE, "wrong", NULL};
	const char *passphrase;
	struct identity in = {0}, out_id = {0};
	char *text, *out = NULL, *again = NULL;
	size_t out_len = 0, again_len = 0;
	int r, pub_in, pub_out;

	if (size < 1)
		return 0;
	passphrase = passphrases[data[0] % 3];
	text = malloc(size);
	if (!text)
		return 0;
	memcpy(text, data + 1, size - 1);
	text[size - 1] = '\0';

	r = sshkey_decrypt_openssh(text, size - 1, passphrase, passphrase ? strlen(passphrase) : 0,
				   &out, &out_len);
	FUZZ_ASSERT(r == 0 || r == -EINVAL || r == -EACCES || r == -ERANGE || r == -ENOTSUP ||
		    r == -EIO);
	in.private_key = text;
	pub_in = identity_read_public(&in);
	FUZZ_ASSERT(pub_in == 0 || pub_in == -EINVAL || pub_in == -ENOTSUP);
	if (r == 0) {
		FUZZ_ASSERT(out && strlen(out) == out_len);
		FUZZ_ASSERT(sshkey_decrypt_openssh(out, out_len, NULL, 0, &again, &again_len) == 0);
		FUZZ_ASSERT(again_len == out_len && memcmp(again, out, out_len) == 0);
		out_id.private_key = out;
		pub_out = identity_read_public(&out_id);
		FUZZ_ASSERT(pub_out == pub_in);
		if (pub_in == 0)
			FUZZ_ASSERT(in.public_len == out_id.public_len &&
				    memcmp(in.public_key, out_id.public_key, in.public_len) == 0 &&
				    strcmp(in.key_type, out_id.key_type) == 0);
	} else {
		FUZZ_ASSERT(!out);
	}
	free(in.public_key);
	free(out_id.public_key);
	free_secret(again, again_len);
	free_secret(out, out_len);
	free(text);
	return 0;
}
