#include "memacct.h"

static uint64_t acct_limit = 160ull << 20;
static uint64_t acct_used[MEMACCT_KINDS];
static uint64_t acct_total, acct_peak;

static const char *const kind_names[] = {
    [MEMACCT_SESSION] = "session",
    [MEMACCT_WINDOW] = "window",
    [MEMACCT_BUFFER] = "buffer",
    [MEMACCT_SOCKET] = "socket",
};

static const char *const stage_names[] = {
    [MEMACCT_OK] = "ok",     [MEMACCT_NO_GROWTH] = "no_growth",
    [MEMACCT_SHED] = "shed", [MEMACCT_REFUSE_FAT] = "refuse_fat",
    [MEMACCT_FULL] = "full",
};

const char *memacct_kind_str(enum memacct_kind k)
{
	return (unsigned)k < MEMACCT_KINDS ? kind_names[k] : "unknown";
}

const char *memacct_stage_str(enum memacct_stage s)
{
	return (unsigned)s <= MEMACCT_FULL ? stage_names[s] : "unknown";
}

/* floor(limit * eighths / 8) without overflow */
static uint64_t eighths_of(uint64_t limit, unsigned eighths)
{
	return limit / 8 * eighths + limit % 8 * eighths / 8;
}

enum memacct_stage memacct_stage_of(uint64_t used, uint64_t limit)
{
	if (used >= limit)
		return MEMACCT_FULL;
	if (used >= eighths_of(limit, 7))
		return MEMACCT_REFUSE_FAT;
	if (used >= eighths_of(limit, 6))
		return MEMACCT_SHED;
	if (used >= eighths_of(limit, 4))
		return MEMACCT_NO_GROWTH;
	return MEMACCT_OK;
}

bool memacct_admit(uint64_t used, uint64_t limit, uint64_t forward_held, uint64_t cost)
{
	if (used >= limit || cost > limit - used)
		return false;
	if (memacct_stage_of(used, limit) >= MEMACCT_REFUSE_FAT &&
	    forward_held > limit / MEMACCT_FORWARD_SHARE_DIV)
		return false;
	return true;
}

void memacct_set_limit(uint64_t limit)
{
	acct_limit = limit;
}

uint64_t memacct_limit(void)
{
	return acct_limit;
}

void memacct_add(enum memacct_kind kind, uint64_t bytes)
{
	acct_used[kind] += bytes;
	acct_total += bytes;
	if (acct_total > acct_peak)
		acct_peak = acct_total;
}

void memacct_sub(enum memacct_kind kind, uint64_t bytes)
{
	acct_used[kind] -= bytes;
	acct_total -= bytes;
}

void memacct_charge(enum memacct_kind kind, uint64_t *share, uint64_t now)
{
	if (now > *share)
		memacct_add(kind, now - *share);
	else
		memacct_sub(kind, *share - now);
	*share = now;
}

uint64_t memacct_used(void)
{
	return acct_total;
}

uint64_t memacct_used_kind(enum memacct_kind kind)
{
	return (unsigned)kind < MEMACCT_KINDS ? acct_used[kind] : 0;
}

uint64_t memacct_peak(void)
{
	return acct_peak;
}

enum memacct_stage memacct_stage(void)
{
	return memacct_stage_of(acct_total, acct_limit);
}
