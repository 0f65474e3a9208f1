#pragma once
#include <ev.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "status.h"

/*
 * The metrics of `moletun ctl metrics` kept in a file for node_exporter's textfile
 * collector: rewritten atomically (atomicfile_replace) every interval from a fresh
 * snapshot, and once more at shutdown with every tunnel marked down. A failed write is
 * logged (the first, a different error, then at most every METRICS_FILE_LOG_EVERY_S) and
 * tried again at the next interval; it never stops the daemon.
 *
 * node_exporter goes on serving the last file written (moletun_tunnel_up 1 for a tunnel
 * long down), so METRICS_FILE_STALE_WRITES failed writes in a row make the file stale: an
 * error logged once and the stale callback (the daemon raises an alert); the next write
 * that succeeds ends it (logged, callback again).
 */
#define METRICS_FILE_LOG_EVERY_S  600
#define METRICS_FILE_STALE_WRITES 3

/* Takes a snapshot of the whole daemon (0 or -errno), as control_ops.snapshot does. */
typedef int (*metrics_file_snapshot_fn)(void *userdata, struct status *ret);
/*
 * The file became stale (`stale`) or was written again. `reason` says what failed
 * ("metrics_textfile PATH not written: ERROR"), `for_seconds` how long writes have been
 * failing (failed writes x interval).
 */
typedef void (*metrics_file_stale_fn)(void *userdata, bool stale, const char *reason,
				      double for_seconds);

struct metrics_file;

/*
 * Writes the file at the loop's next iteration, then every interval_ms. on_stale may be
 * NULL. 0 or -ENOMEM; the path is copied.
 */
int metrics_file_create(struct ev_loop *loop, const char *path, uint64_t interval_ms,
			metrics_file_snapshot_fn snapshot, metrics_file_stale_fn on_stale,
			void *userdata, struct metrics_file **ret);
/* Stops the timer and frees; the file stays (see metrics_file_write_stopped). */
void metrics_file_destroy(struct metrics_file *m);

/* Renders and replaces the file now: 0 or -errno (logged as described above). */
int metrics_file_write(struct metrics_file *m);
/* The last write, at shutdown: the snapshot with every tunnel marked down. */
int metrics_file_write_stopped(struct metrics_file *m);

const char *metrics_file_path(const struct metrics_file *m);
uint64_t metrics_file_interval(const struct metrics_file *m);
/* Whether the file is stale (see above), and the last write's error (0 after a success). */
bool metrics_file_stale(const struct metrics_file *m);
int metrics_file_last_error(const struct metrics_file *m);

/*
 * What a stopped daemon's tunnels are: not up, health down, targets and RTT unknown (their
 * series disappear), state changed at `now`. Counters are kept.
 */
void metrics_mark_stopped(struct status *s, struct timespec now);
