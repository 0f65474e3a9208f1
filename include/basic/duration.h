#pragma once
#include <stddef.h>
#include <stdint.h>

/*
 * Parses a duration such as "250ms", "5s", "1m30s", "1h", "1d" or a bare number of seconds
 * ("5") into milliseconds. Units may be combined in any order of decreasing size.
 * Returns 0, or -EINVAL (syntax, negative, unit missing or unknown) or -ERANGE
 * (overflow). *ret_ms is untouched on failure.
 */
int duration_parse(const char *text, uint64_t *ret_ms);

/* Formats milliseconds in the shortest exact form ("1m30s", "250ms", "0"). */
void duration_format(uint64_t ms, char *buf, size_t size);
