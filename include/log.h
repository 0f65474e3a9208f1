#pragma once
#include <syslog.h>

/*
 * Logging to stderr. Under systemd (JOURNAL_STREAM set) each line carries an sd-daemon
 * priority prefix such as "<3>"; otherwise a UTC timestamp and the level name.
 */
void log_init(int max_priority);
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
