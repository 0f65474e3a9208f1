#include "sessmem.h"

#include <stdalign.h>
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>

/* Keeps the block behind the header aligned as malloc's own blocks are. */
struct header {
	alignas(max_align_t) size_t size;
};

void sessmem_init(struct sessmem *m, size_t cap)
{
	*m = (struct sessmem){.cap = cap};
}

/* Whether a block of `size` bytes, or `more` bytes added to a block, fit beside what is
 * used; records the refusal when not. */
static bool admit(struct sessmem *m, size_t size, size_t more)
{
	if (size > SIZE_MAX - sizeof(struct header) || more > SIZE_MAX - m->used ||
	    (m->cap && m->used + more > m->cap)) {
		if (m->n_refused++ == 0)
			m->refused = size;
		return false;
	}
	return true;
}

static void account(struct sessmem *m, size_t block)
{
	m->used += block;
	if (m->used > m->peak)
		m->peak = m->used;
}

void *sessmem_alloc(struct sessmem *m, size_t size)
{
	struct header *h;

	if (!admit(m, size, size + sizeof(*h)))
		return NULL;
	h = malloc(sizeof(*h) + size);
	if (!h)
		return NULL;
	h->size = size;
	account(m, sizeof(*h) + size);
	return h + 1;
}

void *sessmem_realloc(struct sessmem *m, void *p, size_t size)
{
	struct header *h, *grown;
	size_t old;

	if (!p)
		return sessmem_alloc(m, size);
	h = (struct header *)p - 1;
	old = h->size;
	if (size > old && !admit(m, size, size - old))
		return NULL;
	grown = realloc(h, sizeof(*h) + size);
	if (!grown)
		return NULL;
	grown->size = size;
	m->used -= old;
	account(m, size);
	return grown + 1;
}

void sessmem_free(struct sessmem *m, void *p)
{
	struct header *h;

	if (!p)
		return;
	h = (struct header *)p - 1;
	m->used -= sizeof(*h) + h->size;
	free(h);
}
