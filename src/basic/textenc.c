#include "textenc.h"

#include <stdint.h>
#include <string.h>

size_t utf8_sequence_len(const unsigned char *p, size_t n)
{
	uint32_t cp, min;
	size_t len;

	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xc2 && p[0] <= 0xdf) {
		len = 2, cp = p[0] & 0x1f, min = 0x80;
	} else if (p[0] >= 0xe0 && p[0] <= 0xef) {
		len = 3, cp = p[0] & 0x0f, min = 0x800;
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		len = 4, cp = p[0] & 0x07, min = 0x10000;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3f);
	}
	/* Overlong forms, UTF-16 surrogates and code points past U+10FFFF are ill-formed. */
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

static void put_ascii(FILE *out, unsigned char c, enum text_escape mode)
{
	if (c == '\\' || c == '"') {
		fputc('\\', out);
		fputc(c, out);
	} else if (c == '\n') {
		fputs("\\n", out);
	} else if (mode == TEXT_ESCAPE_LABEL) {
		fputc(c, out);
	} else if (c == '\r') {
		fputs("\\r", out);
	} else if (c == '\t') {
		fputs("\\t", out);
	} else if (c == '\b') {
		fputs("\\b", out);
	} else if (c == '\f') {
		fputs("\\f", out);
	} else if (c < 0x20 || c == 0x7f) {
		fprintf(out, "\\u%04x", c);
	} else if (mode == TEXT_ESCAPE_SLACK && c == '&') {
		fputs("&amp;", out);
	} else if (mode == TEXT_ESCAPE_SLACK && c == '<') {
		fputs("&lt;", out);
	} else if (mode == TEXT_ESCAPE_SLACK && c == '>') {
		fputs("&gt;", out);
	} else {
		fputc(c, out);
	}
}

void text_put_escaped(FILE *out, const char *s, size_t max, enum text_escape mode)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strnlen(s, max);

	for (size_t i = 0; i < n;) {
		size_t len = utf8_sequence_len(p + i, n - i);

		if (len == 0) {
			fputs(REPLACEMENT_CHARACTER, out);
			i++;
		} else if (len > 1) {
			fwrite(p + i, 1, len, out);
			i += len;
		} else {
			put_ascii(out, p[i], mode);
			i++;
		}
	}
}
