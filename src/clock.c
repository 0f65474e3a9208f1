#include "clock.h"

static struct timespec read_clock(clockid_t id)
{
	struct timespec ts;

	/* cannot fail for these clocks on Linux; a zero reading beats garbage if it did */
	if (clock_gettime(id, &ts) < 0)
		ts = (struct timespec){0};
	return ts;
}

double clock_now(void)
{
	struct timespec ts = read_clock(CLOCK_MONOTONIC);

	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int64_t clock_now_ms(void)
{
	struct timespec ts = read_clock(CLOCK_MONOTONIC);

	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t clock_now_usec(void)
{
	struct timespec ts = read_clock(CLOCK_MONOTONIC);

	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

struct timespec clock_wall(void)
{
	return read_clock(CLOCK_REALTIME);
}

struct timespec clock_to_wall_at(double mono, double mono_now, struct timespec wall_now)
{
	double ago = mono_now - mono; /* negative for an instant still to come */
	int64_t whole = (int64_t)ago;
	int64_t ns = (int64_t)wall_now.tv_nsec - (int64_t)((ago - (double)whole) * 1e9);
	struct timespec t = {.tv_sec = wall_now.tv_sec - (time_t)whole};

	if (ns < 0) {
		ns += 1000000000;
		t.tv_sec--;
	} else if (ns >= 1000000000) {
		ns -= 1000000000;
		t.tv_sec++;
	}
	t.tv_nsec = (long)ns;
	return t;
}

struct timespec clock_to_wall(double mono)
{
	double now = clock_now();

	return clock_to_wall_at(mono, now, clock_wall());
}
