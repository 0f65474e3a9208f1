#include "kexinit.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define KEXINIT_COOKIE_LEN 16

static const char *const list_names[KEXINIT_N_LISTS] = {
    [KEXINIT_KEX] = "kex_algorithms",
    [KEXINIT_HOSTKEY] = "server_host_key_algorithms",
    [KEXINIT_CIPHER_C2S] = "encryption_algorithms_client_to_server",
    [KEXINIT_CIPHER_S2C] = "encryption_algorithms_server_to_client",
    [KEXINIT_MAC_C2S] = "mac_algorithms_client_to_server",
    [KEXINIT_MAC_S2C] = "mac_algorithms_server_to_client",
    [KEXINIT_COMPRESSION_C2S] = "compression_algorithms_client_to_server",
    [KEXINIT_COMPRESSION_S2C] = "compression_algorithms_server_to_client",
    [KEXINIT_LANGUAGE_C2S] = "languages_client_to_server",
    [KEXINIT_LANGUAGE_S2C] = "languages_server_to_client",
};

const char *kexinit_list_name(enum kexinit_list which)
{
	return which < KEXINIT_N_LISTS ? list_names[which] : "?";
}

static uint32_t get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* RFC 4251 6: algorithm names are printable US-ASCII without spaces (and commas only
 * between them). */
static bool name_list_char(uint8_t c)
{
	return c > 0x20 && c < 0x7f;
}

void kexinit_free(struct kexinit *k)
{
	for (size_t i = 0; i < KEXINIT_N_LISTS; i++) {
		free(k->lists[i]);
		k->lists[i] = NULL;
	}
}

int kexinit_parse_payload(const uint8_t *payload, size_t len, struct kexinit *ret)
{
	char *lists[KEXINIT_N_LISTS] = {0};
	const uint8_t *p = payload;
	size_t left = len;
	int r = -EINVAL;

	if (len < 1 || payload[0] != SSH_MSG_KEXINIT)
		return -EPROTO;
	if (left < 1 + KEXINIT_COOKIE_LEN)
		return -EINVAL;
	p += 1 + KEXINIT_COOKIE_LEN;
	left -= 1 + KEXINIT_COOKIE_LEN;
	for (size_t i = 0; i < KEXINIT_N_LISTS; i++) {
		uint32_t n;

		if (left < 4)
			goto fail;
		n = get_u32(p);
		if (n > left - 4)
			goto fail;
		for (uint32_t j = 0; j < n; j++)
			if (!name_list_char(p[4 + j]))
				goto fail;
		lists[i] = malloc((size_t)n + 1);
		if (!lists[i]) {
			r = -ENOMEM;
			goto fail;
		}
		memcpy(lists[i], p + 4, n);
		lists[i][n] = '\0';
		p += 4 + (size_t)n;
		left -= 4 + (size_t)n;
	}
	/* first_kex_packet_follows, then a reserved uint32 */
	if (left < 5)
		goto fail;
	for (size_t i = 0; i < KEXINIT_N_LISTS; i++)
		ret->lists[i] = lists[i];
	ret->first_kex_packet_follows = p[0] != 0;
	return 0;
fail:
	for (size_t i = 0; i < KEXINIT_N_LISTS; i++)
		free(lists[i]);
	return r;
}

/*
 * Finds the version line. Returns 0 with the line copied (without CR LF) and *ret_end just
 * past it, -EAGAIN, or an error as kexinit_scan() documents.
 */
static int scan_version(const uint8_t *data, size_t len, char *version, size_t *ret_end)
{
	size_t start = 0;

	for (;;) {
		const uint8_t *nl = memchr(data + start, '\n', len - start);
		size_t end, line_len;

		if (!nl) {
			/* a partial line that cannot become a valid version line any more */
			if (len - start >= 4 && memcmp(data + start, "SSH-", 4) == 0 &&
			    len - start >= KEXINIT_VERSION_MAX)
				return -EINVAL;
			return len >= KEXINIT_INPUT_MAX ? -E2BIG : -EAGAIN;
		}
		end = (size_t)(nl - data);
		line_len = end - start;
		if (line_len > 0 && data[end - 1] == '\r')
			line_len--;
		if (line_len >= 4 && memcmp(data + start, "SSH-", 4) == 0) {
			/* its end of line included */
			if (end + 1 - start > KEXINIT_VERSION_MAX)
				return -EINVAL;
			for (size_t i = 0; i < line_len; i++)
				if (data[start + i] < 0x20 || data[start + i] > 0x7e)
					return -EINVAL;
			if (!(line_len >= 8 && memcmp(data + start, "SSH-2.0-", 8) == 0) &&
			    !(line_len >= 9 && memcmp(data + start, "SSH-1.99-", 9) == 0))
				return -EPROTO;
			memcpy(version, data + start, line_len);
			version[line_len] = '\0';
			*ret_end = end + 1;
			return 0;
		}
		start = end + 1;
		if (start >= KEXINIT_INPUT_MAX)
			return -E2BIG;
	}
}

int kexinit_scan(const uint8_t *data, size_t len, struct kexinit *ret)
{
	struct kexinit k = {0};
	size_t at, packet_len, padding;
	int r;

	if (len > KEXINIT_INPUT_MAX)
		len = KEXINIT_INPUT_MAX;
	r = scan_version(data, len, k.version, &at);
	if (r < 0)
		return r;
	/* uint32 packet_length, byte padding_length, payload, padding (no MAC yet) */
	if (len - at < 5)
		return len >= KEXINIT_INPUT_MAX ? -E2BIG : -EAGAIN;
	packet_len = get_u32(data + at);
	padding = data[at + 4];
	if (packet_len > KEXINIT_PACKET_MAX)
		return -E2BIG;
	if (packet_len < 2 || padding >= packet_len - 1)
		return -EINVAL;
	if (len - at - 4 < packet_len)
		return at + 4 + packet_len > KEXINIT_INPUT_MAX ? -E2BIG : -EAGAIN;
	r = kexinit_parse_payload(data + at + 5, packet_len - 1 - padding, &k);
	if (r < 0)
		return r;
	*ret = k;
	return 0;
}

bool kexinit_next_name(const char **cursor, const char **ret_name, size_t *ret_len)
{
	const char *s = *cursor, *comma;

	while (*s == ',')
		s++;
	if (!*s)
		return false;
	comma = strchr(s, ',');
	*ret_name = s;
	*ret_len = comma ? (size_t)(comma - s) : strlen(s);
	*cursor = s + *ret_len;
	return true;
}

bool kexinit_list_has(const char *list, const char *name)
{
	const char *cursor = list, *n;
	size_t len, want = strlen(name);

	while (kexinit_next_name(&cursor, &n, &len))
		if (len == want && memcmp(n, name, len) == 0)
			return true;
	return false;
}
