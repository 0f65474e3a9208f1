#pragma once
#include <stddef.h>
#include <stdio.h>

#define REPLACEMENT_CHARACTER "\xef\xbf\xbd" /* U+FFFD */

/* Text escaping shared by every output format (JSON replies, metrics, webhooks). */
enum text_escape {
	TEXT_ESCAPE_JSON,  /* RFC 8259 string contents */
	TEXT_ESCAPE_SLACK, /* JSON, plus &, < and > as Slack's mrkdwn requires */
	TEXT_ESCAPE_LABEL, /* Prometheus label value: backslash, double quote, newline */
};

/* Length of the well-formed UTF-8 sequence at p (n bytes available), or 0 if ill-formed. */
size_t utf8_sequence_len(const unsigned char *p, size_t n);

/*
 * Writes the first `max` bytes (or up to NUL) of s, escaped for `mode`, always as valid
 * UTF-8: an ill-formed byte becomes U+FFFD.
 */
void text_put_escaped(FILE *out, const char *s, size_t max, enum text_escape mode);
