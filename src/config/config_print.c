#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "config_internal.h"
#include "config_table.h"
#include "fwdspec.h"
#include "hostspec.h"
#include "jumpspec.h"
#include "redact.h"

/*
 * The configuration as people read it: the key reference from the key table (moletun
 * help config, moletun.conf(5)) and the summary of a loaded one (moletun check).
 */

/* man(7) text: a leading '.' or '\'' would be a request, '-' must be a real hyphen-minus. */
static void man_text(FILE *out, const char *s)
{
	if (*s == '.' || *s == '\'')
		fputs("\\&", out);
	for (; *s; s++) {
		if (*s == '\\')
			fputs("\\e", out);
		else if (*s == '-')
			fputs("\\-", out);
		else
			fputc(*s, out);
	}
}

static void man_key(FILE *out, const struct config_key *k)
{
	void (*format_limit)(uint64_t, char *, size_t) = config_types[k->type]->format_limit;
	char limit[32];

	fputs(".TP\n\\fB", out);
	man_text(out, k->name);
	fputs("\\fR = \\fI", out);
	man_text(out, k->placeholder);
	fputs("\\fR\n", out);
	man_text(out, k->help);
	fputc('\n', out);
	if (k->flags & CONFIG_KEY_REQUIRED)
		fputs("Required.\n", out);
	if (k->flags & CONFIG_KEY_REPEATABLE)
		fputs("May be given more than once.\n", out);
	if (format_limit) {
		format_limit(k->min, limit, sizeof(limit));
		fputs("From ", out);
		man_text(out, limit);
		format_limit(k->max, limit, sizeof(limit));
		fputs(" to ", out);
		man_text(out, limit);
		fputs(".\n", out);
	}
	if (k->default_value) {
		fputs("Default: \\fB", out);
		man_text(out, k->default_value);
		fputs("\\fR.\n", out);
	}
}

/* The first sentence of a help text: up to ". " or its end, at most `max` bytes. */
static int first_sentence_len(const char *help, int max)
{
	const char *end = strstr(help, ". ");
	int len = end ? (int)(end - help) + 1 : (int)strlen(help);

	return len < max ? len : max;
}

/* "default 5s, 1s to 1h; required; repeatable" for one key: what a reader checks first. */
static void text_key_facts(const struct config_key *k, char *buf, size_t size)
{
	void (*format_limit)(uint64_t, char *, size_t) = config_types[k->type]->format_limit;
	char lo[32], hi[32];
	size_t used = 0;

#define FACT(...)                                                                                  \
	do {                                                                                       \
		int n_ = snprintf(buf + used, size - used, "%s", used ? ", " : "");                \
		if (n_ > 0 && (size_t)n_ < size - used)                                            \
			used += (size_t)n_;                                                        \
		n_ = snprintf(buf + used, size - used, __VA_ARGS__);                               \
		if (n_ > 0 && (size_t)n_ < size - used)                                            \
			used += (size_t)n_;                                                        \
	} while (0)
	buf[0] = '\0';
	if (k->default_value)
		FACT("default %s", k->default_value);
	if (format_limit) {
		format_limit(k->min, lo, sizeof(lo));
		format_limit(k->max, hi, sizeof(hi));
		FACT("%s to %s", lo, hi);
	}
	if (k->flags & CONFIG_KEY_REQUIRED)
		FACT("required");
	if (k->flags & CONFIG_KEY_REPEATABLE)
		FACT("repeatable");
#undef FACT
}

/* `len` bytes of `text`, indented by `indent` and broken at blanks before `width`. */
static void print_wrapped(FILE *out, int indent, const char *text, int len, int width)
{
	int start = 0;

	while (start < len) {
		int end = len, room = width - indent;

		if (len - start > room) {
			end = start + room;
			while (end > start && text[end] != ' ')
				end--;
			if (end == start) /* one word longer than the line */
				end = start + room;
		}
		fprintf(out, "%*s%.*s\n", indent, "", end - start, text + start);
		start = end;
		while (start < len && text[start] == ' ')
			start++;
	}
}

void config_print_keys_text(FILE *out)
{
	for (size_t s = 0; s < CONFIG_SECTION_COUNT; s++) {
		const struct config_section_info *sec = &config_sections[s];

		fprintf(out, "%s[%s%s]  %.*s\n", s ? "\n" : "", sec->name,
			sec->named ? ":NAME" : "", first_sentence_len(sec->help, 200), sec->help);
		for (size_t i = 0; i < sec->n_keys; i++) {
			const struct config_key *k = &sec->keys[i];
			char facts[160];

			text_key_facts(k, facts, sizeof(facts));
			fprintf(out, "  %s = %s%s%s%s\n", k->name, k->placeholder,
				facts[0] ? "  (" : "", facts, facts[0] ? ")" : "");
			print_wrapped(out, 6, k->help, first_sentence_len(k->help, 400), 88);
		}
	}
	fputs("\nThe whole text of every key: man 5 moletun.conf\n", out);
}

void config_print_man_keys(FILE *out)
{
	for (size_t s = 0; s < CONFIG_SECTION_COUNT; s++) {
		const struct config_section_info *sec = &config_sections[s];

		fprintf(out, ".SS \"[%s%s]\"\n", sec->name, sec->named ? ":\\fINAME\\fP" : "");
		man_text(out, sec->help);
		fputc('\n', out);
		for (size_t i = 0; i < sec->n_keys; i++)
			man_key(out, &sec->keys[i]);
	}
}

static void print_non_defaults(enum config_section section, const void *object, const char *skip,
			       FILE *out)
{
	const struct config_section_info *info = &config_sections[section];
	char value[256];

	for (size_t k = 0; k < info->n_keys; k++) {
		const struct config_key *key = &info->keys[k];

		if (skip && strcmp(key->name, skip) == 0)
			continue;
		if (!key->default_value || config_key_is_default(key, object))
			continue;
		config_key_format(key, object, value, sizeof(value));
		fprintf(out, "  %s=%s", key->name, value);
	}
}

/* One key that ssh_host could give, with where its value came from. */
static void print_ssh_source(const struct tunnel_config *t, const struct config_key *key,
			     uint32_t bit, FILE *out)
{
	const char *source = (t->ssh_config_keys & bit) ? "from ssh_config"
							: "set in the section, over ssh_config";
	char value[512], listen[300], target[300];

	if (key->type != CONFIG_TYPE_FORWARD) {
		config_key_format(key, t, value, sizeof(value));
		fprintf(out, "    %s = %s  (%s)\n", key->name, value, source);
		return;
	}
	for (size_t f = 0; f < t->n_forwards; f++) {
		if ((int)t->forwards[f].kind != key->forward_kind)
			continue;
		fwdspec_format_listen(&t->forwards[f], listen, sizeof(listen));
		fwdspec_format_target(&t->forwards[f], target, sizeof(target));
		fprintf(out, "    %s = %s %s  (%s)\n", key->name, listen, target, source);
	}
}

/* For a tunnel with ssh_host: each value ssh -G gave, and those the section overrode. */
static void print_ssh_sources(const struct tunnel_config *t, FILE *out)
{
	const struct config_section_info *info = &config_sections[CONFIG_SECTION_TUNNEL];

	if (!t->ssh_host)
		return;
	fprintf(out, "  ssh_host %s: ssh -G%s%s %s\n", t->ssh_host, t->ssh_config ? " -F " : "",
		t->ssh_config ? t->ssh_config : "", t->ssh_host);
	for (size_t k = 0; k < info->n_keys && k < 32; k++) {
		uint32_t bit = 1u << k;

		if ((t->ssh_config_keys | t->ssh_config_overridden) & bit)
			print_ssh_source(t, &info->keys[k], bit, out);
	}
}

void config_print_summary(const struct config *c, FILE *out)
{
	int width = 0, alert_width = 0;

	/* Names are padded within tunnels and within alerts, so columns line up. */
	for (size_t i = 0; i < c->n_tunnels; i++)
		if ((int)strlen(c->tunnels[i].name) > width)
			width = (int)strlen(c->tunnels[i].name);
	for (size_t i = 0; i < c->n_alerts; i++)
		if ((int)strlen(c->alerts[i].name) > alert_width)
			alert_width = (int)strlen(c->alerts[i].name);
	if (c->n_tunnels == 0)
		fputs("no tunnels configured\n", out);
	for (size_t i = 0; i < c->n_tunnels; i++) {
		const struct tunnel_config *t = &c->tunnels[i];
		char server[300];

		hostspec_format(t->host, t->port, server, sizeof(server));
		fprintf(out, "%-*s  %s@%s", width, t->name, t->user, server);
		if (t->n_jump_hops > 0) {
			char via[JUMP_HOPS_MAX * JUMP_HOP_TEXT_MAX];

			jumpspec_format(t->jump_hops, t->n_jump_hops, via, sizeof(via));
			fprintf(out, " via %s", via);
		}
		for (size_t f = 0; f < t->n_forwards; f++) {
			char listen[300], target[300];

			fwdspec_format_listen(&t->forwards[f], listen, sizeof(listen));
			fwdspec_format_target(&t->forwards[f], target, sizeof(target));
			fprintf(out, "  %c %s -> %s",
				t->forwards[f].kind == FORWARD_LOCAL ? 'L' : 'R', listen, target);
		}
		print_non_defaults(CONFIG_SECTION_TUNNEL, t, "port", out);
		fputc('\n', out);
		print_ssh_sources(t, out);
	}
	for (size_t i = 0; i < c->n_alerts; i++) {
		const struct alert_config *a = &c->alerts[i];
		char target[300];

		if (a->url)
			url_redact(a->url, target, sizeof(target));
		fprintf(out, "alert:%-*s  %s %s", alert_width, a->name,
			a->url ? alert_format_str(a->format) : "exec", a->url ? target : a->exec);
		print_non_defaults(CONFIG_SECTION_ALERT, a, "format", out);
		if (a->n_tunnels) {
			fputs("  tunnels=", out);
			for (size_t j = 0; j < a->n_tunnels; j++)
				fprintf(out, "%s%s", j ? "," : "", a->tunnels[j]);
		}
		if (a->n_headers)
			fprintf(out, "  headers=%zu", a->n_headers);
		fputc('\n', out);
	}
}
