#include "diag.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void diag_init(struct diag *d)
{
	d->messages = NULL;
	d->count = 0;
}

void diag_finish(struct diag *d)
{
	if (!d)
		return;
	for (size_t i = 0; i < d->count; i++)
		free(d->messages[i]);
	free(d->messages);
	diag_init(d);
}

/* Out of memory drops the message: callers count errors themselves and never rely on it. */
void diag_add(struct diag *d, const char *file, unsigned line, const char *fmt, ...)
{
	char *text = NULL, *message = NULL, **grown;
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&text, fmt, ap);
	va_end(ap);
	if (r < 0)
		return;
	if (line > 0)
		r = asprintf(&message, "%s:%u: %s", file, line, text);
	else
		r = asprintf(&message, "%s: %s", file, text);
	free(text);
	if (r < 0)
		return;
	grown = realloc(d->messages, (d->count + 1) * sizeof(*grown));
	if (!grown) {
		free(message);
		return;
	}
	d->messages = grown;
	d->messages[d->count++] = message;
}
