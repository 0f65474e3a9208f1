#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * What an SSH server says first (RFC 4253 4.2 and 7.1): its version line and its KEXINIT,
 * the algorithms it offers, sent unencrypted before any key exchange. libssh2 negotiates
 * from that list but does not expose it, so `moletun audit` reads it itself on a
 * connection of its own. Pure: this parses bytes an unauthenticated server sent; the
 * caller does the reading.
 */

/* Most bytes kexinit_scan() waits for: lines before the version line, then the packet. */
#define KEXINIT_INPUT_MAX (64 * 1024)
/* RFC 4253 6.1 asks every implementation to take packets of 35000 bytes; OpenSSH 9.2's
 * KEXINIT is about 1100. */
#define KEXINIT_PACKET_MAX 35000
/* RFC 4253 4.2: the version line is at most 255 characters, CR LF included. */
#define KEXINIT_VERSION_MAX 255
#define SSH_MSG_KEXINIT	    20

/* The ten name-lists of a KEXINIT, in the order they are sent. */
enum kexinit_list {
	KEXINIT_KEX,
	KEXINIT_HOSTKEY,
	KEXINIT_CIPHER_C2S,
	KEXINIT_CIPHER_S2C,
	KEXINIT_MAC_C2S,
	KEXINIT_MAC_S2C,
	KEXINIT_COMPRESSION_C2S,
	KEXINIT_COMPRESSION_S2C,
	KEXINIT_LANGUAGE_C2S,
	KEXINIT_LANGUAGE_S2C,
	KEXINIT_N_LISTS,
};

struct kexinit {
	/* "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3", without CR LF */
	char version[KEXINIT_VERSION_MAX + 1];
	/* each name-list as sent ("curve25519-sha256,ecdh-sha2-nistp256"), NUL-terminated */
	char *lists[KEXINIT_N_LISTS];
	bool first_kex_packet_follows;
};

/*
 * Scans the first `len` bytes a server sent: lines before the version line (allowed by RFC
 * 4253 4.2), the version line ("SSH-2.0-..." or "SSH-1.99-..."), then the first binary
 * packet, which must be a KEXINIT. Every character the result holds is printable US-ASCII
 * (names: no space either), so it can be printed as it is.
 *
 * Returns 0 with *ret filled (release it with kexinit_free()), -EAGAIN when more bytes are
 * needed, -EPROTO when it is not an SSH-2 server (no version line, another protocol
 * version, a first packet other than KEXINIT), -EINVAL when malformed, -E2BIG past
 * KEXINIT_INPUT_MAX or KEXINIT_PACKET_MAX, -ENOMEM. *ret is untouched on failure.
 */
int kexinit_scan(const uint8_t *data, size_t len, struct kexinit *ret);

/*
 * Parses a KEXINIT payload (from the message number on) into ret->lists and
 * ret->first_kex_packet_follows; ret->version is left alone. 0, -EPROTO (not a KEXINIT),
 * -EINVAL or -ENOMEM; the lists are untouched on failure.
 */
int kexinit_parse_payload(const uint8_t *payload, size_t len, struct kexinit *ret);

/* Frees the lists (a zeroed or failed struct is fine). */
void kexinit_free(struct kexinit *k);

/* "kex_algorithms", "server_host_key_algorithms", "encryption_algorithms_client_to_server",
 * ... as RFC 4253 7.1 names the fields. */
const char *kexinit_list_name(enum kexinit_list which);

/*
 * Walks a name-list: sets *ret_name and *ret_len to the next name after *cursor and
 * advances it; false at the end. Start with *cursor = the list.
 */
bool kexinit_next_name(const char **cursor, const char **ret_name, size_t *ret_len);

/* Whether the name-list holds exactly `name`. */
bool kexinit_list_has(const char *list, const char *name);
