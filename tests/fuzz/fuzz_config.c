#include <errno.h>
#include <string.h>

#include "config.h"
#include "fuzz.h"

/*
 * A whole configuration file, includes disabled. Relative paths are taken from a directory
 * that does not exist, so only absolute paths in the input reach the file system (read
 * only: stat, open, a 512-byte read of a key file).
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static FILE *devnull;
	struct config *c = NULL;
	struct diag diags;
	int r;

	if (!devnull)
		devnull = fopen("/dev/null", "we");
	diag_init(&diags);
	r = config_load_buffer("/nonexistent-moletun-fuzz/fuzz.conf", (const char *)data, size,
			       false, &c, &diags);
	/* An error always says why; a success has nothing to say. */
	FUZZ_ASSERT(r == 0 || r == -EINVAL || r == -ENOMEM);
	FUZZ_ASSERT((r == 0) == (diags.count == 0));
	FUZZ_ASSERT((r == 0) == (c != NULL));
	for (size_t i = 0; i < diags.count; i++)
		FUZZ_ASSERT(strncmp(diags.messages[i], "/nonexistent-moletun-fuzz/fuzz.conf",
				    strlen("/nonexistent-moletun-fuzz/fuzz.conf")) == 0);
	diag_finish(&diags);
	if (c) {
		diag_init(&diags);
		config_warnings(c, &diags);
		diag_finish(&diags);
		if (devnull)
			config_print_summary(c, devnull);
		for (size_t i = 0; i < c->n_tunnels; i++) {
			FUZZ_ASSERT(tunnel_config_equal(&c->tunnels[i], &c->tunnels[i]));
			FUZZ_ASSERT(config_find_tunnel(c, c->tunnels[i].name) == &c->tunnels[i]);
		}
		config_free(c);
	}
	return 0;
}
