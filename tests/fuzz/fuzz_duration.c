#include <errno.h>
#include <string.h>

#include "duration.h"
#include "fuzz.h"

/* duration_parse on any text; what parses formats back to text that parses to the same. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1), buf[64], small[8];
	uint64_t ms = 0, again = 0;
	int r;

	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	r = duration_parse(text, &ms);
	FUZZ_ASSERT(r == 0 || r == -EINVAL || r == -ERANGE);
	if (r == 0) {
		duration_format(ms, buf, sizeof(buf));
		FUZZ_ASSERT(strlen(buf) < sizeof(buf) - 1);
		FUZZ_ASSERT(duration_parse(buf, &again) == 0);
		FUZZ_ASSERT(again == ms);
		/* a short buffer truncates, never overflows */
		for (size_t n = 0; n <= sizeof(small); n++) {
			duration_format(ms, small, n);
			if (n > 0)
				FUZZ_ASSERT(strlen(small) < n);
		}
	}
	free(text);
	return 0;
}
