#pragma once
#include <ev.h>
#include <stdint.h>
#include <syslog.h>

/*
 * Logging to stderr. Under systemd (JOURNAL_STREAM set) each line carries an sd-daemon
 * priority prefix such as "<3>"; otherwise a UTC timestamp and the level name.
 *
 * Before log_init() lines are written to stderr directly (the command-line tools). After
 * it (the daemon) a write never blocks: lines wait in a queue of LOG_QUEUE_BYTES that the
 * loop flushes when stderr is writable; when the queue is full whole lines are dropped,
 * counted, and "N log lines dropped" is logged once the reader takes lines again.
 */
#define LOG_QUEUE_BYTES (128 << 10)

void log_init(int max_priority);
/* Flushes the queue from this loop whenever stderr is writable again. */
void log_attach(struct ev_loop *loop);
void log_detach(void);
/* Detaches, then waits at most wait_seconds for the reader to take what is queued. */
void log_finish(double wait_seconds);
/* Lines dropped and not reported yet. */
uint64_t log_dropped(void);
void log_set_level(int max_priority);
int log_get_level(void);
/* Parses "debug", "info", "notice", "warning", "err"; returns -1 when unknown. */
int log_level_from_str(const char *s);
const char *log_level_str(int priority);

void log_msg(int priority, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...)  log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)   log_msg(LOG_INFO, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_NOTICE, __VA_ARGS__)
#define log_warn(...)   log_msg(LOG_WARNING, __VA_ARGS__)
#define log_err(...)    log_msg(LOG_ERR, __VA_ARGS__)
