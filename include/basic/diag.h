#pragma once
#include <stddef.h>

/* A list of "FILE:LINE: message" diagnostics collected while loading a config. */
struct diag {
	char **messages;
	size_t count;
};

void diag_init(struct diag *d);
void diag_finish(struct diag *d);
/* Appends "file:line: message"; line 0 prints "file: message". */
void diag_add(struct diag *d, const char *file, unsigned line, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
