#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "fwdspec.h"

static void check_round_trip(const struct forward_spec *f)
{
	char listen[300], target[300], text[620], err[128];
	struct forward_spec again;

	fwdspec_format_listen(f, listen, sizeof(listen));
	fwdspec_format_target(f, target, sizeof(target));
	snprintf(text, sizeof(text), "%s %s", listen, target);
	FUZZ_ASSERT(fwdspec_parse(f->kind, text, &again, err, sizeof(err)) == 0);
	FUZZ_ASSERT(again.kind == f->kind);
	FUZZ_ASSERT(strcmp(again.listen_host, f->listen_host) == 0);
	FUZZ_ASSERT(again.listen_port == f->listen_port);
	FUZZ_ASSERT(strcmp(again.target_host, f->target_host) == 0);
	FUZZ_ASSERT(again.target_port == f->target_port);
}

/* fwdspec_parse on any text (the first byte picks local or remote); what parses, formats
 * back to text that parses to the same forward. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	enum forward_kind kind;
	struct forward_spec f;
	char err[128], *text;
	int r;

	if (size == 0)
		return 0;
	kind = (data[0] & 1) ? FORWARD_REMOTE : FORWARD_LOCAL;
	text = malloc(size);
	if (!text)
		return 0;
	memcpy(text, data + 1, size - 1);
	text[size - 1] = '\0';
	memset(&f, 0xa5, sizeof(f));
	err[0] = '\0';
	r = fwdspec_parse(kind, text, &f, err, sizeof(err));
	FUZZ_ASSERT(r == 0 || r == -EINVAL);
	if (r < 0) {
		FUZZ_ASSERT(err[0] != '\0');
		/* a NULL err buffer is allowed */
		FUZZ_ASSERT(fwdspec_parse(kind, text, &f, NULL, 0) == r);
	} else {
		FUZZ_ASSERT(f.listen_port > 0 && f.target_port > 0);
		FUZZ_ASSERT(f.listen_host[0] && f.target_host[0]);
		check_round_trip(&f);
	}
	free(text);
	return 0;
}
