#include <string.h>

#include "fuzz.h"
#include "sshconf.h"

static void check_list(char *const *items, size_t n, size_t max)
{
	FUZZ_ASSERT(n <= max);
	for (size_t i = 0; i < n; i++)
		FUZZ_ASSERT(items[i] && !strchr(items[i], '\n'));
}

/* sshconf_parse on what ssh -G printed: stdout, then a NUL, then stderr. Every kept value
 * is one line; lists stay within their limits; a policy is one moletun knows. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 2);
	const char *err;
	struct sshconf c;
	const char *policy;

	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = text[size + 1] = '\0';
	err = text + strlen(text) + 1;
	if (err > text + size)
		err = text + size;
	if (sshconf_parse(text, err, &c) == 0) {
		check_list(c.identity_files, c.n_identity_files, SSHCONF_FILES_MAX);
		check_list(c.local_forwards, c.n_local_forwards, SSHCONF_FORWARDS_MAX);
		check_list(c.remote_forwards, c.n_remote_forwards,
			   SSHCONF_FORWARDS_MAX - c.n_local_forwards);
		policy = sshconf_host_key_policy(&c);
		FUZZ_ASSERT(!policy || !strcmp(policy, "yes") || !strcmp(policy, "no") ||
			    !strcmp(policy, "accept-new"));
		FUZZ_ASSERT(!c.hostname || sshconf_alias_known(&c, "x") ||
			    !strcmp(c.hostname, "x") || !strcmp(c.hostname, "X"));
		sshconf_free(&c);
	}
	free(text);
	return 0;
}
