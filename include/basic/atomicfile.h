#pragma once
#include <stddef.h>
#include <sys/types.h>

/*
 * Replaces `path` with `len` bytes of `data` so that a reader sees the old file or the new
 * one, never a part: a temporary file in the same directory (named PATH.XXXXXX, so a
 * collector reading only *.prom skips it) is written, given `mode` (whatever the umask),
 * fsync'd and renamed over `path`. Returns 0, or -errno with the temporary file removed
 * and `path` untouched. Blocks for as long as a local write and fsync take.
 */
int atomicfile_replace(const char *path, const void *data, size_t len, mode_t mode);
