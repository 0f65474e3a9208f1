#include "control_proto.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TOKENS 8

static const struct command_info {
	const char *name;
	const char *usage;
	const char *option; /* the one option the command takes, or NULL */
	int min_names, max_names;
	bool mutates;
	const char *summary; /* for `moletun help ctl`; "\n" continues it on the next line */
} commands[] = {
    [CONTROL_STATUS] = {"status", "usage: status [--json] [NAME]", "--json", 0, 1, false,
			"the tunnel table; exit 0 all up and ok, 3 some not up,\n"
			"4 all up but some not ok (target down, degraded), 1 error"},
    [CONTROL_METRICS] = {"metrics", "usage: metrics", NULL, 0, 0, false,
			 "Prometheus text exposition"},
    [CONTROL_RECONNECT] = {"reconnect", "usage: reconnect NAME|--all", "--all", 0, 1, true,
			   "drop and re-establish now, skipping backoff"},
    [CONTROL_RELOAD] = {"reload", "usage: reload", NULL, 0, 0, true,
			"re-read the configuration (as SIGHUP does) and wait:\n"
			"exit 0 applied, 1 refused (the running one stays)"},
    [CONTROL_ALERT_TEST] = {"alert-test", "usage: alert-test [NAME]", NULL, 0, 1, true,
			    "send a test event to every alert target (or NAME);\n"
			    "exit 0 all delivered, 1 some failed"},
};

#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

ssize_t control_request_scan(const char *buf, size_t len)
{
	size_t window = len < CONTROL_REQUEST_MAX ? len : CONTROL_REQUEST_MAX;
	const char *lf = memchr(buf, '\n', window);

	if (lf)
		return lf - buf;
	return len >= CONTROL_REQUEST_MAX ? -EMSGSIZE : -EAGAIN;
}

static bool is_blank(char c)
{
	return c == ' ' || c == '\t';
}

static bool has_control_bytes(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return true;
	}
	return false;
}

struct token {
	const char *start;
	size_t len;
};

/* Splits on blanks; returns the number of tokens, or -E2BIG when there are too many. */
static int tokenize(const char *line, size_t len, struct token tokens[MAX_TOKENS])
{
	int n = 0;

	for (size_t i = 0; i < len;) {
		size_t start;

		while (i < len && is_blank(line[i]))
			i++;
		if (i == len)
			break;
		start = i;
		while (i < len && !is_blank(line[i]))
			i++;
		if (n == MAX_TOKENS)
			return -E2BIG;
		tokens[n].start = line + start;
		tokens[n].len = i - start;
		n++;
	}
	return n;
}

static bool token_is(const struct token *t, const char *s)
{
	return t->len == strlen(s) && memcmp(t->start, s, t->len) == 0;
}

int control_request_parse(const char *line, size_t len, struct control_request *ret,
			  const char **ret_error)
{
	struct token tokens[MAX_TOKENS];
	struct control_request r = {0};
	const struct command_info *info = NULL;
	int n, names = 0;
	bool option = false;

	if (len > 0 && line[len - 1] == '\r')
		len--;
	n = tokenize(line, len, tokens);
	if (n == 0) {
		*ret_error = "empty request";
		return -EINVAL;
	}
	for (size_t c = 0; c < N_COMMANDS; c++) {
		if (token_is(&tokens[0], commands[c].name)) {
			info = &commands[c];
			r.command = (enum control_command)c;
		}
	}
	if (!info) {
		*ret_error = "unknown command";
		return -EINVAL;
	}
	*ret_error = info->usage;
	if (n < 0 || has_control_bytes(line, len))
		return -EINVAL;
	for (int i = 1; i < n; i++) {
		const struct token *t = &tokens[i];

		if (t->start[0] == '-') {
			if (!info->option || !token_is(t, info->option))
				return -EINVAL;
			option = true;
			continue;
		}
		if (++names > info->max_names || t->len >= sizeof(r.name))
			return -EINVAL;
		memcpy(r.name, t->start, t->len);
		r.name[t->len] = '\0';
	}
	if (names < info->min_names)
		return -EINVAL;
	if (r.command == CONTROL_RECONNECT) {
		/* Exactly one of NAME and --all: a bare "reconnect" must not mean everything. */
		if (option == (names > 0))
			return -EINVAL;
		r.all = option;
	} else if (r.command == CONTROL_STATUS) {
		r.json = option;
	}
	*ret_error = NULL;
	*ret = r;
	return 0;
}

int control_request_format(const struct control_request *r, char *buf, size_t size)
{
	const char *option = NULL;
	int n;

	if ((unsigned)r->command >= N_COMMANDS)
		return -EINVAL;
	if ((r->command == CONTROL_STATUS && r->json) ||
	    (r->command == CONTROL_RECONNECT && r->all))
		option = commands[r->command].option;
	n = snprintf(buf, size, "%s%s%s%s%s\n", commands[r->command].name, option ? " " : "",
		     option ? option : "", r->name[0] ? " " : "", r->name);
	if (n < 0 || (size_t)n >= size)
		return -ENOBUFS;
	return 0;
}

bool control_command_mutates(enum control_command c)
{
	return (unsigned)c < N_COMMANDS && commands[c].mutates;
}

const char *control_command_str(enum control_command c)
{
	return (unsigned)c < N_COMMANDS ? commands[c].name : "unknown";
}

/* Parses a non-negative decimal of exactly `len` bytes; -1 when malformed. */
static long parse_count(const char *s, size_t len)
{
	long v = 0;

	if (len == 0)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9' || v > (LONG_MAX - 9) / 10)
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

int control_reply_header_parse(const char *line, size_t len, struct control_reply_header *ret)
{
	struct control_reply_header h = {
	    .tunnels = -1, .up = -1, .healthy = -1, .alerts = -1, .failed = -1};
	const struct {
		const char *name;
		long *value;
	} counts[] = {
	    {"tunnels", &h.tunnels}, {"up", &h.up},	    {"healthy", &h.healthy},
	    {"alerts", &h.alerts},   {"failed", &h.failed},
	};

	if (len > 0 && line[len - 1] == '\r')
		len--;
	if (len >= 5 && memcmp(line, "error", 5) == 0 && (len == 5 || line[5] == ' ')) {
		size_t mlen = len > 6 ? len - 6 : 0;

		if (mlen >= sizeof(h.message))
			mlen = sizeof(h.message) - 1;
		memcpy(h.message, line + 6, mlen);
		h.message[mlen] = '\0';
		*ret = h;
		return 0;
	}
	if (len < 2 || memcmp(line, "ok", 2) != 0 || (len > 2 && line[2] != ' '))
		return -EBADMSG;
	h.ok = true;
	for (size_t i = 2; i < len;) {
		const char *eq;
		size_t start;

		while (i < len && line[i] == ' ')
			i++;
		start = i;
		while (i < len && line[i] != ' ')
			i++;
		eq = memchr(line + start, '=', i - start);
		if (!eq)
			continue;
		for (size_t k = 0; k < sizeof(counts) / sizeof(counts[0]); k++)
			if ((size_t)(eq - line - start) == strlen(counts[k].name) &&
			    memcmp(line + start, counts[k].name, strlen(counts[k].name)) == 0)
				*counts[k].value = parse_count(eq + 1, line + i - eq - 1);
	}
	*ret = h;
	return 0;
}

void control_commands_print(FILE *out)
{
	for (size_t i = 0; i < N_COMMANDS; i++) {
		const char *synopsis = commands[i].usage + strlen("usage: ");
		const char *line = commands[i].summary;

		fprintf(out, "  %-24s ", synopsis);
		for (;;) {
			const char *nl = strchr(line, '\n');

			if (!nl) {
				fprintf(out, "%s\n", line);
				break;
			}
			fprintf(out, "%.*s\n%27s", (int)(nl - line), line, "");
			line = nl + 1;
		}
	}
}
