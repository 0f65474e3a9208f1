#include "sshconf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "strutil.h"

/* Longest line looked at (the algorithm lists are long; anything we take is short). */
#define LINE_MAX_LEN 4096

static int set_once(char **field, const char *value)
{
	if (*field)
		return 0; /* the first value is the one ssh uses */
	*field = strdup(value);
	return *field ? 0 : -ENOMEM;
}

static int append(char ***items, size_t *n, size_t max, char *value)
{
	char **grown;

	if (!value)
		return -ENOMEM;
	if (*n >= max) {
		free(value);
		return 0;
	}
	grown = realloc(*items, (*n + 1) * sizeof(*grown));
	if (!grown) {
		free(value);
		return -ENOMEM;
	}
	*items = grown;
	(*items)[(*n)++] = value;
	return 0;
}

/* "[127.0.0.1]:5432" -> "127.0.0.1:5432"; an IPv6 address keeps its brackets. */
static void unbracket(const char *field, size_t len, char *out, size_t size)
{
	const char *close = memchr(field, ']', len);

	if (field[0] == '[' && close && !memchr(field, ':', (size_t)(close - field)))
		snprintf(out, size, "%.*s%.*s", (int)(close - field - 1), field + 1,
			 (int)(len - (size_t)(close + 1 - field)), close + 1);
	else
		snprintf(out, size, "%.*s", (int)len, field);
}

/* "[bind]:port [host]:port" as moletun writes a forward. */
static char *forward_text(const char *value)
{
	char listen[300], target[300], *text;
	size_t len = strcspn(value, " \t");
	const char *rest = value + len;

	unbracket(value, len, listen, sizeof(listen));
	rest += strspn(rest, " \t");
	unbracket(rest, strlen(rest), target, sizeof(target));
	if (asprintf(&text, "%s %s", listen, target) < 0)
		return NULL;
	return text;
}

/* A decimal number (seconds, a count, a port), or 0 for "none" and anything else. */
static unsigned number(const char *value)
{
	char *end;
	unsigned long v = strtoul(value, &end, 10);

	if (end == value || *end || v > 1000000)
		return 0;
	return (unsigned)v;
}

static int take_list_value(struct sshconf *c, const char *key, const char *value)
{
	if (strcmp(key, "identityfile") == 0)
		return append(&c->identity_files, &c->n_identity_files, SSHCONF_FILES_MAX,
			      strdup(value));
	if (strcmp(key, "localforward") == 0)
		return append(&c->local_forwards, &c->n_local_forwards,
			      SSHCONF_FORWARDS_MAX - c->n_remote_forwards, forward_text(value));
	if (strcmp(key, "remoteforward") == 0)
		return append(&c->remote_forwards, &c->n_remote_forwards,
			      SSHCONF_FORWARDS_MAX - c->n_local_forwards, forward_text(value));
	return 0;
}

static int take_value(struct sshconf *c, const char *key, const char *value)
{
	static const struct {
		const char *key;
		size_t offset;
		bool none_unsets; /* "none" is printed for no value */
	} strings[] = {
	    {"hostname", offsetof(struct sshconf, hostname), false},
	    {"user", offsetof(struct sshconf, user), false},
	    {"stricthostkeychecking", offsetof(struct sshconf, strict_host_key), false},
	    {"proxyjump", offsetof(struct sshconf, proxy_jump), true},
	    {"proxycommand", offsetof(struct sshconf, proxy_command), true},
	    {"certificatefile", offsetof(struct sshconf, certificate_file), true},
	};
	char known_hosts[LINE_MAX_LEN];

	for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++) {
		if (strcmp(key, strings[i].key) != 0)
			continue;
		if (strings[i].none_unsets && strcmp(value, "none") == 0)
			return 0;
		return set_once((char **)(void *)((char *)c + strings[i].offset), value);
	}
	if (strcmp(key, "port") == 0)
		c->port = (uint16_t)(number(value) <= 65535 ? number(value) : 0);
	else if (strcmp(key, "connecttimeout") == 0)
		c->connect_timeout = number(value);
	else if (strcmp(key, "serveraliveinterval") == 0)
		c->alive_interval = number(value);
	else if (strcmp(key, "serveralivecountmax") == 0)
		c->alive_count_max = number(value);
	else if (strcmp(key, "userknownhostsfile") == 0 && strcmp(value, "none") != 0) {
		snprintf(known_hosts, sizeof(known_hosts), "%.*s", (int)strcspn(value, " \t"),
			 value);
		return set_once(&c->known_hosts_file, known_hosts);
	}
	return take_list_value(c, key, value);
}

/* One stdout line: "keyword value". */
static int parse_option(struct sshconf *c, const char *line)
{
	char key[64];
	size_t len = strcspn(line, " \t");
	const char *value = line + len;

	if (len == 0 || len >= sizeof(key))
		return 0;
	memcpy(key, line, len);
	key[len] = '\0';
	value += strspn(value, " \t");
	if (!*value)
		return 0;
	return take_value(c, key, value);
}

/* One stderr line: -v output, or a message of ssh's own. */
static int parse_stderr(struct sshconf *c, const char *line)
{
	static const char applying[] = ": Applying options for ";
	const char *p;

	if (strncmp(line, "debug", 5) != 0) {
		if (!*line || strncmp(line, "OpenSSH_", 8) == 0)
			return 0;
		return set_once(&c->message, line);
	}
	if (strncmp(line, "debug1: Executing command: ", 27) == 0)
		c->match_exec = true;
	p = strstr(line, applying);
	if (p && strcmp(p + strlen(applying), "*") != 0)
		c->host_matched = true;
	return 0;
}

/* Calls `fn` for every line of `text`, without its end of line. */
static int each_line(struct sshconf *c, const char *text,
		     int (*fn)(struct sshconf *c, const char *line))
{
	char line[LINE_MAX_LEN];

	while (*text) {
		size_t len = strcspn(text, "\n");
		int r;

		if (len < sizeof(line)) {
			memcpy(line, text, len);
			line[len] = '\0';
			if (len > 0 && line[len - 1] == '\r')
				line[len - 1] = '\0';
			r = fn(c, line);
			if (r < 0)
				return r;
		}
		text += len;
		if (*text)
			text++;
	}
	return 0;
}

int sshconf_parse(const char *out, const char *err, struct sshconf *ret)
{
	int r;

	memset(ret, 0, sizeof(*ret));
	r = each_line(ret, out, parse_option);
	if (r == 0)
		r = each_line(ret, err, parse_stderr);
	if (r < 0)
		sshconf_free(ret);
	return r;
}

static void free_list(char **items, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(items[i]);
	free(items);
}

void sshconf_free(struct sshconf *c)
{
	free(c->hostname);
	free(c->user);
	free_list(c->identity_files, c->n_identity_files);
	free(c->known_hosts_file);
	free(c->strict_host_key);
	free(c->proxy_jump);
	free(c->proxy_command);
	free(c->certificate_file);
	free_list(c->local_forwards, c->n_local_forwards);
	free_list(c->remote_forwards, c->n_remote_forwards);
	free(c->message);
	memset(c, 0, sizeof(*c));
}

bool sshconf_alias_known(const struct sshconf *c, const char *alias)
{
	return c->host_matched || !c->hostname || strcasecmp(c->hostname, alias) != 0;
}

const char *sshconf_host_key_policy(const struct sshconf *c)
{
	static const struct {
		const char *ssh, *moletun;
	} map[] = {
	    {"true", "yes"},
	    {"yes", "yes"},
	    {"ask", "yes"},
	    {"false", "no"},
	    {"no", "no"},
	    {"off", "no"},
	    {"accept-new", "accept-new"},
	};

	for (size_t i = 0; c->strict_host_key && i < sizeof(map) / sizeof(map[0]); i++)
		if (strcmp(c->strict_host_key, map[i].ssh) == 0)
			return map[i].moletun;
	return NULL;
}
