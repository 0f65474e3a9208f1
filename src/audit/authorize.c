#include "authorize.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fwdspec.h"
#include "jumpspec.h"

/* A growing string; `failed` once an allocation failed. */
struct text {
	char *s;
	size_t len, cap;
	bool failed;
};

static void text_add(struct text *t, const char *s, size_t n)
{
	if (t->failed)
		return;
	if (t->len + n + 1 > t->cap) {
		size_t cap = t->cap ? t->cap : 128;
		char *p;

		while (cap < t->len + n + 1)
			cap *= 2;
		p = realloc(t->s, cap);
		if (!p) {
			t->failed = true;
			return;
		}
		t->s = p;
		t->cap = cap;
	}
	memcpy(t->s + t->len, s, n);
	t->len += n;
	t->s[t->len] = '\0';
}

static void text_puts(struct text *t, const char *s)
{
	text_add(t, s, strlen(s));
}

static int fail(char *err, size_t err_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t err_size, const char *fmt, ...)
{
	va_list ap;

	if (err && err_size) {
		va_start(ap, fmt);
		vsnprintf(err, err_size, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

int authorize_quote(const char *value, char *buf, size_t size)
{
	size_t n = 0, len = strlen(value);

	if (len > 0 && value[len - 1] == '\\')
		return -EINVAL;
	if (size < 1)
		return -ENOSPC;
	buf[n++] = '"';
	for (const char *p = value; *p; p++) {
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return -EINVAL;
		if (*p == '"') {
			if (n + 1 >= size)
				return -ENOSPC;
			buf[n++] = '\\';
		}
		if (n + 1 >= size)
			return -ENOSPC;
		buf[n++] = *p;
	}
	if (n + 2 > size)
		return -ENOSPC;
	buf[n++] = '"';
	buf[n] = '\0';
	return 0;
}

/* "host:port", "[v6]:port"; a listen host lowercased, as sshd lowercases the request. */
static void dest_text(const struct authorize_dest *d, bool lower, char *buf, size_t size)
{
	bool v6 = strchr(d->host, ':') != NULL;
	size_t n;

	snprintf(buf, size, "%s%s%s:%u", v6 ? "[" : "", d->host, v6 ? "]" : "", d->port);
	if (!lower)
		return;
	n = strlen(buf);
	for (size_t i = 0; i < n; i++)
		buf[i] = (char)tolower((unsigned char)buf[i]);
}

static int add_option(struct text *t, const char *name, const char *value, char *err,
		      size_t err_size)
{
	char quoted[600];
	int r = authorize_quote(value, quoted, sizeof(quoted));

	if (r == -EINVAL)
		return fail(err, err_size,
			    "%s value '%s' cannot be written in an authorized_keys line", name,
			    value);
	if (r < 0)
		return fail(err, err_size, "%s value too long", name);
	text_puts(t, ",");
	text_puts(t, name);
	text_puts(t, "=");
	text_puts(t, quoted);
	return 0;
}

int authorize_check_from(const char *from, char *err, size_t err_size)
{
	const char *p = from;

	if (!*from)
		return fail(err, err_size, "--from: empty");
	for (;;) {
		const char *start;

		if (*p == '!')
			p++;
		start = p;
		while (*p && *p != ',') {
			if (!isalnum((unsigned char)*p) && !strchr(".:/*?_%-", *p))
				return fail(err, err_size,
					    "--from: '%c' in '%s' (use addresses, host names, CIDR "
					    "blocks or patterns, separated by commas)",
					    *p, from);
			p++;
		}
		if (p == start)
			return fail(err, err_size, "--from: empty entry in '%s'", from);
		if (!*p)
			return 0;
		p++;
	}
}

/* The comment: printable, without blanks, so it stays one field. */
static void add_comment(struct text *t, const char *node, const char *tunnels)
{
	char buf[512];
	size_t n;

	snprintf(buf, sizeof(buf), "moletun@%s:%s", node, tunnels);
	n = strlen(buf);
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)buf[i] <= 0x20 || (unsigned char)buf[i] >= 0x7f)
			buf[i] = '_';
	text_puts(t, buf);
}

int authorize_format(const struct authorize_line *line, const char *from, const char *node,
		     char **ret, char *err, size_t err_size)
{
	struct text t = {0};
	char dest[300];
	int r = 0;

	text_puts(&t, "restrict");
	/* port-forwarding without a permitopen would allow every destination, Unix sockets
	 * included: a line that forwards names both lists, a placeholder where one is empty */
	if (line->n_opens > 0 || line->n_listens > 0) {
		text_puts(&t, ",port-forwarding");
		for (size_t i = 0; i < line->n_opens && r == 0; i++) {
			dest_text(&line->opens[i], false, dest, sizeof(dest));
			r = add_option(&t, "permitopen", dest, err, err_size);
		}
		if (line->n_opens == 0)
			r = add_option(&t, "permitopen", AUTHORIZE_NO_OPEN, err, err_size);
		for (size_t i = 0; i < line->n_listens && r == 0; i++) {
			dest_text(&line->listens[i], true, dest, sizeof(dest));
			r = add_option(&t, "permitlisten", dest, err, err_size);
		}
		if (line->n_listens == 0 && r == 0)
			r = add_option(&t, "permitlisten", AUTHORIZE_NO_LISTEN, err, err_size);
	}
	if (r == 0)
		r = add_option(&t, "command", AUTHORIZE_COMMAND, err, err_size);
	if (r == 0 && from && line->first_hop) {
		r = authorize_check_from(from, err, err_size);
		if (r == 0)
			r = add_option(&t, "from", from, err, err_size);
	}
	if (r < 0) {
		free(t.s);
		return r;
	}
	text_puts(&t, " ");
	text_puts(&t, line->public_key);
	text_puts(&t, " ");
	add_comment(&t, node, line->tunnels);
	if (t.failed) {
		free(t.s);
		return -ENOMEM;
	}
	*ret = t.s;
	return 0;
}

void authorize_format_label(const struct authorize_line *line, bool from_given, char *buf,
			    size_t size)
{
	bool v6 = strchr(line->server_host, ':') != NULL;

	snprintf(buf, size, "# %s@%s%s%s:%u: %s%s", line->server_user, v6 ? "[" : "",
		 line->server_host, v6 ? "]" : "", line->server_port, line->roles,
		 from_given && !line->first_hop
		     ? " (no from=: connections to it come from the bastion before it)"
		     : "");
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

static int add_dest(struct authorize_dest **list, size_t *n, const char *host, uint16_t port)
{
	struct authorize_dest *p;

	for (size_t i = 0; i < *n; i++)
		if ((*list)[i].port == port && strcmp((*list)[i].host, host) == 0)
			return 0;
	p = realloc(*list, (*n + 1) * sizeof(**list));
	if (!p)
		return -ENOMEM;
	*list = p;
	p[*n].host = strdup(host);
	if (!p[*n].host)
		return -ENOMEM;
	p[*n].port = port;
	(*n)++;
	return 0;
}

/* Appends ", "-separated (or `sep`) text to a heap string. */
static int append(char **s, const char *sep, const char *what)
{
	size_t old = *s ? strlen(*s) : 0;
	char *p = realloc(*s, old + strlen(sep) + strlen(what) + 1);

	if (!p)
		return -ENOMEM;
	if (old == 0)
		p[0] = '\0';
	else
		strcat(p, sep);
	strcat(p, what);
	*s = p;
	return 0;
}

/* The line for key on host:port as user, created if new. NULL when out of memory. */
static struct authorize_line *line_for(struct authorize_set *set, const char *host, uint16_t port,
				       const char *user, const char *key)
{
	struct authorize_line *l;

	for (size_t i = 0; i < set->n; i++) {
		l = &set->lines[i];
		if (l->server_port == port && strcmp(l->server_host, host) == 0 &&
		    strcmp(l->server_user, user) == 0 && strcmp(l->public_key, key) == 0)
			return l;
	}
	l = realloc(set->lines, (set->n + 1) * sizeof(*set->lines));
	if (!l)
		return NULL;
	set->lines = l;
	l = &set->lines[set->n];
	memset(l, 0, sizeof(*l));
	set->n++;
	l->server_host = dup_or_null(host);
	l->server_user = dup_or_null(user);
	l->public_key = dup_or_null(key);
	l->server_port = port;
	l->first_hop = true;
	if (!l->server_host || !l->server_user || !l->public_key)
		return NULL;
	return l;
}

/* Records that `tunnel` uses the line as `role`. */
static int line_use(struct authorize_line *l, const char *tunnel, const char *role, bool first_hop)
{
	char what[300];
	bool named = false;
	const char *p = l->tunnels;
	size_t n = strlen(tunnel);

	while (p && *p) {
		if (strncmp(p, tunnel, n) == 0 && (p[n] == ',' || p[n] == '\0'))
			named = true;
		p = strchr(p, ',');
		if (p)
			p++;
	}
	if (!named && append(&l->tunnels, ",", tunnel) < 0)
		return -ENOMEM;
	snprintf(what, sizeof(what), "%s of tunnel %s", role, tunnel);
	if (append(&l->roles, ", ", what) < 0)
		return -ENOMEM;
	l->first_hop = l->first_hop && first_hop;
	return 0;
}

int authorize_set_add_tunnel(struct authorize_set *set, const struct tunnel_config *t,
			     const char *key, const char *jump_key)
{
	struct authorize_line *l;
	char role[64];
	int r;

	for (size_t i = 0; i < t->n_jump_hops; i++) {
		const struct jump_hop *hop = &t->jump_hops[i];
		const char *next_host = i + 1 < t->n_jump_hops ? t->jump_hops[i + 1].host : t->host;
		uint16_t next_port = i + 1 < t->n_jump_hops ? t->jump_hops[i + 1].port : t->port;

		l = line_for(set, hop->host, hop->port, hop->user ? hop->user : t->user,
			     jump_key ? jump_key : key);
		if (!l)
			return -ENOMEM;
		if (t->n_jump_hops > 1)
			snprintf(role, sizeof(role), "bastion %zu", i + 1);
		else
			snprintf(role, sizeof(role), "bastion");
		r = line_use(l, t->name, role, i == 0);
		if (r == 0)
			r = add_dest(&l->opens, &l->n_opens, next_host, next_port);
		if (r < 0)
			return r;
	}
	l = line_for(set, t->host, t->port, t->user, key);
	if (!l)
		return -ENOMEM;
	r = line_use(l, t->name, "sidecar", t->n_jump_hops == 0);
	for (size_t i = 0; i < t->n_forwards && r == 0; i++) {
		const struct forward_spec *f = &t->forwards[i];

		if (f->kind == FORWARD_LOCAL)
			r = add_dest(&l->opens, &l->n_opens, f->target_host, f->target_port);
		else
			r = add_dest(&l->listens, &l->n_listens, f->listen_host, f->listen_port);
	}
	return r;
}

static void dests_free(struct authorize_dest *d, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(d[i].host);
	free(d);
}

void authorize_set_free(struct authorize_set *set)
{
	for (size_t i = 0; i < set->n; i++) {
		struct authorize_line *l = &set->lines[i];

		free(l->server_host);
		free(l->server_user);
		free(l->public_key);
		free(l->roles);
		free(l->tunnels);
		dests_free(l->opens, l->n_opens);
		dests_free(l->listens, l->n_listens);
	}
	free(set->lines);
	set->lines = NULL;
	set->n = 0;
}
