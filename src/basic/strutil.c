#include "strutil.h"

#include <string.h>

bool strutil_is_blank(char c)
{
	return c == ' ' || c == '\t';
}

bool strutil_equal(const char *a, const char *b)
{
	if (!a || !b)
		return a == b;
	return strcmp(a, b) == 0;
}
