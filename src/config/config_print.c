#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "config_internal.h"
#include "config_table.h"

/*
 * The configuration as people read it: the key reference from the key table (moletun
 * help config, moletun.conf(5)).
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
