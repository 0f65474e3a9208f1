#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "kexinit.h"

static bool printable(const char *s, bool spaces)
{
	for (; *s; s++)
		if ((unsigned char)*s < (spaces ? 0x20 : 0x21) || (unsigned char)*s > 0x7e)
			return false;
	return true;
}

/* kexinit_scan() on what a server might send first; a success holds only printable text,
 * every prefix of a success asks for more, and a scan is the same on a second run. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kexinit k, again;
	int r;

	memset(&k, 0, sizeof(k));
	r = kexinit_scan(data, size, &k);
	FUZZ_ASSERT(r == 0 || r == -EAGAIN || r == -EPROTO || r == -EINVAL || r == -E2BIG ||
		    r == -ENOMEM);
	if (r < 0) {
		for (size_t i = 0; i < KEXINIT_N_LISTS; i++)
			FUZZ_ASSERT(k.lists[i] == NULL);
		return 0;
	}
	FUZZ_ASSERT(strncmp(k.version, "SSH-", 4) == 0);
	FUZZ_ASSERT(strlen(k.version) < KEXINIT_VERSION_MAX);
	FUZZ_ASSERT(printable(k.version, true));
	for (size_t i = 0; i < KEXINIT_N_LISTS; i++) {
		const char *cursor = k.lists[i], *name;
		size_t len;

		FUZZ_ASSERT(k.lists[i] != NULL);
		FUZZ_ASSERT(printable(k.lists[i], false));
		while (kexinit_next_name(&cursor, &name, &len)) {
			FUZZ_ASSERT(len > 0 && memchr(name, ',', len) == NULL);
			FUZZ_ASSERT(name >= k.lists[i] &&
				    name + len <= k.lists[i] + strlen(k.lists[i]));
		}
	}
	memset(&again, 0, sizeof(again));
	FUZZ_ASSERT(kexinit_scan(data, size, &again) == 0);
	FUZZ_ASSERT(strcmp(again.version, k.version) == 0);
	kexinit_free(&again);
	kexinit_free(&k);
	return 0;
}
