#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int max_level = LOG_INFO;
static int journal;

static const char *const level_names[] = {
	[LOG_EMERG] = "emerg",   [LOG_ALERT] = "alert", [LOG_CRIT] = "crit",
	[LOG_ERR] = "err",       [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
	[LOG_INFO] = "info",     [LOG_DEBUG] = "debug",
};

void log_init(int max_priority)
{
	max_level = max_priority;
	journal = getenv("JOURNAL_STREAM") != NULL;
}

void log_set_level(int max_priority)
{
	max_level = max_priority;
}

int log_get_level(void)
{
	return max_level;
}

int log_level_from_str(const char *s)
{
	for (int p = LOG_ERR; p <= LOG_DEBUG; p++)
		if (strcmp(s, level_names[p]) == 0)
			return p;
	return -1;
}

const char *log_level_str(int priority)
{
	if (priority < LOG_EMERG || priority > LOG_DEBUG)
		return "?";
	return level_names[priority];
}

void log_msg(int priority, const char *fmt, ...)
{
	char line[2048];
	va_list ap;
	int n;

	if (priority > max_level)
		return;
	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (journal) {
		fprintf(stderr, "<%d>%s\n", priority, line);
	} else {
		struct timespec ts;
		struct tm tm;
		char stamp[32];

		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
		fprintf(stderr, "%s.%03ldZ %s: %s\n", stamp, ts.tv_nsec / 1000000,
			log_level_str(priority), line);
	}
	fflush(stderr);
}
