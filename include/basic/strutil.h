#pragma once
#include <stdbool.h>

/* Small string predicates the parsers of several layers share. Pure. */

/* A space or a tab: what separates words on a configuration or control line. */
bool strutil_is_blank(char c);

/* Both NULL, or both strings with the same bytes. */
bool strutil_equal(const char *a, const char *b);
