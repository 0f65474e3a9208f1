#include <errno.h>
#include <string.h>

#include "audit.h"
#include "fuzz.h"
#include "kexinit.h"

static bool printable(const char *s, bool spaces)
{
	for (; *s; s++)
		if ((unsigned char)*s < (spaces ? 0x20 : 0x21) || (unsigned char)*s > 0x7e)
			return false;
	return true;
}

/* The audit's verdicts on what a server offers: four findings, each pass or fail, printable. */
static void check_verdicts(const struct kexinit *k)
{
	struct audit_report r;
	FILE *null = fopen("/dev/null", "w");

	audit_report_init(&r);
	audit_judge_algorithms(&r, k);
	FUZZ_ASSERT(r.out_of_memory || r.n == 4);
	for (size_t i = 0; i < r.n; i++) {
		FUZZ_ASSERT(r.items[i].result == AUDIT_PASS || r.items[i].result == AUDIT_FAIL);
		FUZZ_ASSERT(printable(r.items[i].detail, true) && printable(r.items[i].fix, true));
		FUZZ_ASSERT((r.items[i].result == AUDIT_FAIL) == (r.items[i].fix[0] != '\0'));
	}
	if (null) {
		audit_report_print_json(&r, null);
		audit_report_print_text(&r, null);
		fclose(null);
	}
	audit_report_finish(&r);
}

/* kexinit_scan() on what a server might send first; a success holds only printable text
 * and a scan is the same on a second run. */
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
	check_verdicts(&k);
	memset(&again, 0, sizeof(again));
	FUZZ_ASSERT(kexinit_scan(data, size, &again) == 0);
	FUZZ_ASSERT(strcmp(again.version, k.version) == 0);
	kexinit_free(&again);
	kexinit_free(&k);
	return 0;
}
