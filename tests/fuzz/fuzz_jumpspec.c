#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "jumpspec.h"

/* What parses formats back to text that parses to the same hops. */
static void check_round_trip(const struct jump_hop *hops, size_t n)
{
	char text[JUMP_HOPS_MAX * JUMP_HOP_TEXT_MAX], err[128];
	struct jump_hop *again;
	size_t n_again;

	jumpspec_format(hops, n, text, sizeof(text));
	FUZZ_ASSERT(strlen(text) + 1 < sizeof(text));
	FUZZ_ASSERT(jumpspec_parse(text, &again, &n_again, err, sizeof(err)) == 0);
	FUZZ_ASSERT(jumpspec_equal(hops, n, again, n_again));
	jumpspec_free(again, n_again);
}

static void check_hops(const struct jump_hop *hops, size_t n)
{
	FUZZ_ASSERT(n >= 1 && n <= JUMP_HOPS_MAX);
	for (size_t i = 0; i < n; i++) {
		char hop[JUMP_HOP_TEXT_MAX];

		FUZZ_ASSERT(hops[i].host && hops[i].host[0]);
		FUZZ_ASSERT(!hops[i].user || hops[i].user[0]);
		FUZZ_ASSERT(hops[i].port > 0);
		jumpspec_format_hop(&hops[i], hop, sizeof(hop));
		FUZZ_ASSERT(strlen(hop) + 1 < sizeof(hop));
	}
	FUZZ_ASSERT(jumpspec_equal(hops, n, hops, n));
	check_round_trip(hops, n);
}

/* jumpspec_parse on any text (a proxy_jump value): only the documented errors, each with
 * a reason and the outputs untouched; what parses is well formed and round-trips. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct jump_hop untouched;
	struct jump_hop *hops = &untouched, *again;
	size_t n = 12345, n_again;
	char err[128], *text = malloc(size + 1);
	int r;

	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	err[0] = '\0';
	r = jumpspec_parse(text, &hops, &n, err, sizeof(err));
	FUZZ_ASSERT(r == 0 || r == -EINVAL || r == -E2BIG || r == -ENOMEM);
	if (r < 0) {
		FUZZ_ASSERT(hops == &untouched && n == 12345);
		FUZZ_ASSERT(r == -ENOMEM || err[0] != '\0');
		/* a NULL err buffer is allowed */
		FUZZ_ASSERT(jumpspec_parse(text, &again, &n_again, NULL, 0) == r);
	} else if (n == 0) {
		FUZZ_ASSERT(hops == NULL);
	} else {
		check_hops(hops, n);
		jumpspec_free(hops, n);
	}
	free(text);
	return 0;
}
