#include "sessmem.h"

#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "memacct.h"

/* Keeps the block behind the header aligned as malloc's own blocks are. */
struct sessmem_block {
	alignas(max_align_t) size_t size;
	struct sessmem_block *prev, *next;
};

void sessmem_init(struct sessmem *m, size_t cap)
{
	*m = (struct sessmem){.cap = cap};
}

/* Whether a block of `size` bytes, or `more` bytes added to a block, fit beside what is
 * used; records the refusal when not. */
static bool admit(struct sessmem *m, size_t size, size_t more)
{
	if (size > SIZE_MAX - sizeof(struct sessmem_block) || more > SIZE_MAX - m->used ||
	    (m->cap && m->used + more > m->cap)) {
		if (m->n_refused++ == 0)
			m->refused = size;
		return false;
	}
	return true;
}

/* Every session's bytes count in the daemon-wide account too (memacct.h). */
static void account(struct sessmem *m, size_t block)
{
	memacct_add(MEMACCT_SESSION, block);
	m->used += block;
	if (m->used > m->peak)
		m->peak = m->used;
}

void *sessmem_alloc(struct sessmem *m, size_t size)
{
	struct sessmem_block *h;

	if (!admit(m, size, size + sizeof(*h)))
		return NULL;
	h = malloc(sizeof(*h) + size);
	if (!h)
		return NULL;
	h->size = size;
	h->prev = NULL;
	h->next = m->blocks;
	if (m->blocks)
		m->blocks->prev = h;
	m->blocks = h;
	account(m, sizeof(*h) + size);
	return h + 1;
}

/*
 * A copy, never realloc(): libssh2 decodes the private key into session memory at every
 * authentication, so no block may go back to the heap with its old bytes in it.
 */
void *sessmem_realloc(struct sessmem *m, void *p, size_t size)
{
	struct sessmem_block *h;
	void *copy;

	if (!p)
		return sessmem_alloc(m, size);
	h = (struct sessmem_block *)p - 1;
	copy = sessmem_alloc(m, size);
	if (!copy)
		return NULL;
	memcpy(copy, p, h->size < size ? h->size : size);
	sessmem_free(m, p);
	return copy;
}

/* Wiped before it is freed (see sessmem_realloc). */
void sessmem_free(struct sessmem *m, void *p)
{
	struct sessmem_block *h;

	if (!p)
		return;
	h = (struct sessmem_block *)p - 1;
	m->used -= sizeof(*h) + h->size;
	memacct_sub(MEMACCT_SESSION, sizeof(*h) + h->size);
	if (h->prev)
		h->prev->next = h->next;
	else
		m->blocks = h->next;
	if (h->next)
		h->next->prev = h->prev;
	explicit_bzero(p, h->size);
	free(h);
}

size_t sessmem_release_all(struct sessmem *m)
{
	size_t n = 0;

	while (m->blocks) {
		sessmem_free(m, m->blocks + 1);
		n++;
	}
	return n;
}
