#include <errno.h>
#include <string.h>

#include "control_proto.h"
#include "fuzz.h"

static void check_request(const char *buf, size_t size)
{
	struct control_request req, again;
	const char *error = NULL;
	char line[CONTROL_REQUEST_MAX + 1];
	ssize_t n = control_request_scan(buf, size);
	int r;

	FUZZ_ASSERT(n >= 0 || n == -EAGAIN || n == -EMSGSIZE);
	if (n == -EAGAIN) {
		FUZZ_ASSERT(size < CONTROL_REQUEST_MAX);
		n = (ssize_t)size; /* what the server parses when the client sends EOF */
	} else if (n < 0) {
		return;
	}
	FUZZ_ASSERT((size_t)n <= size && n < CONTROL_REQUEST_MAX);
	r = control_request_parse(buf, (size_t)n, &req, &error);
	if (r < 0) {
		FUZZ_ASSERT(r == -EINVAL);
		FUZZ_ASSERT(error != NULL && error[0] != '\0' && !strchr(error, '\n'));
		return;
	}
	FUZZ_ASSERT(error == NULL);
	FUZZ_ASSERT(strlen(req.name) < sizeof(req.name));
	FUZZ_ASSERT(strcmp(control_command_str(req.command), "unknown") != 0);
	(void)control_command_mutates(req.command);
	/* The canonical line parses to the same request. */
	FUZZ_ASSERT(control_request_format(&req, line, sizeof(line)) == 0);
	n = control_request_scan(line, strlen(line));
	FUZZ_ASSERT(n == (ssize_t)strlen(line) - 1);
	FUZZ_ASSERT(control_request_parse(line, (size_t)n, &again, &error) == 0);
	FUZZ_ASSERT(again.command == req.command && again.json == req.json &&
		    again.all == req.all && strcmp(again.name, req.name) == 0);
}

static void check_reply_header(const char *buf, size_t size)
{
	const char *lf = memchr(buf, '\n', size);
	struct control_reply_header h;
	int r;

	r = control_reply_header_parse(buf, lf ? (size_t)(lf - buf) : size, &h);
	FUZZ_ASSERT(r == 0 || r == -EBADMSG);
	if (r == 0) {
		FUZZ_ASSERT(strlen(h.message) < sizeof(h.message));
		FUZZ_ASSERT(h.tunnels >= -1 && h.up >= -1 && h.alerts >= -1 && h.failed >= -1);
	}
}

/* The control socket's request parser (what any local client can send) and the ctl
 * client's reply header parser. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* An exact-size copy, so reading past `size` is caught. */
	char *buf = malloc(size ? size : 1);

	if (!buf)
		return 0;
	memcpy(buf, data, size);
	check_request(buf, size);
	check_reply_header(buf, size);
	free(buf);
	return 0;
}
