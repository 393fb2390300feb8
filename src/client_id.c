/*
 * Client identity for the rate limiter (SPEC.md §5): the socket peer, the
 * rightmost untrusted X-Forwarded-For address when the peer is a trusted
 * proxy, or the SHA-256 of an API key header. Pure functions of the request
 * and a const configuration.
 */
#include "gw/client_id.h"

#include "gw/net.h"

#include <openssl/evp.h>
#include <string.h>

bool gw_client_parse_addr(const char *s, size_t len, uint8_t out_bin[16], char *out_text)
{
    while (len > 0 && (*s == ' ' || *s == '\t')) {
        s++;
        len--;
    }
    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    if (len >= 2 && s[0] == '[' && s[len - 1] == ']') {
        s++;
        len -= 2;
    }
    if (!gw_net_parse_addr(s, len, out_bin, NULL))
        return false;
    gw_net_addr_text(out_bin, out_text, GW_CLIENT_ADDR_MAX);
    return true;
}

/* Copies the string src into dst (cap bytes), truncating; no printf on the
 * per-request path. */
static void copy_text(char *dst, size_t cap, const char *prefix, const char *src)
{
    size_t p = strlen(prefix), n = strlen(src);
    if (p >= cap)
        p = cap - 1;
    if (n > cap - 1 - p)
        n = cap - 1 - p;
    memcpy(dst, prefix, p);
    memcpy(dst + p, src, n);
    dst[p + n] = '\0';
}

/* The client address of a request from a trusted peer (SPEC.md §3
 * TRUSTED_PROXIES): X-Forwarded-For elements are walked once, from the
 * right, across every XFF field in reverse order (several fields are one
 * comma-separated list, RFC 9110 §5.3). Each trusted hop is skipped; the
 * first untrusted address is the client; a malformed element (empty, a
 * port, a name) ends the walk at the last good address. One pass, so a
 * header full of trusted hops costs linear time. */
static void resolve_addr(const struct gw_config *cfg, const uint8_t peer_bin[16],
                         const char *peer_text, const struct gw_http_head *h, char *addr_out)
{
    copy_text(addr_out, GW_CLIENT_ADDR_MAX, "", peer_text);
    if (!h || cfg->trusted_count == 0 || !gw_config_is_trusted(cfg, peer_bin))
        return;
    for (size_t i = h->header_count; i-- > 0;) {
        const struct gw_http_header *f = &h->headers[i];
        if (!gw_slice_eq_nocase(f->name, "x-forwarded-for"))
            continue;
        const char *v = f->value.ptr;
        size_t end = f->value.len;
        for (;;) {
            size_t start = end;
            while (start > 0 && v[start - 1] != ',')
                start--;
            uint8_t bin[16];
            char text[GW_CLIENT_ADDR_MAX];
            if (!gw_client_parse_addr(v + start, end - start, bin, text))
                return; /* malformed: keep the last good address */
            copy_text(addr_out, GW_CLIENT_ADDR_MAX, "", text);
            if (!gw_config_is_trusted(cfg, bin))
                return; /* the rightmost untrusted address: the client */
            if (start == 0)
                break;
            end = start - 1;
        }
    }
}

void gw_client_addr(const struct gw_config *cfg, const uint8_t peer_bin[16], const char *peer_text,
                    const struct gw_http_head *h, char *addr_out)
{
    resolve_addr(cfg, peer_bin, peer_text, h, addr_out);
}

bool gw_client_id(const struct gw_config *cfg, const uint8_t peer_bin[16], const char *peer_text,
                  const struct gw_http_head *h, char *key_out, char *addr_out)
{
    resolve_addr(cfg, peer_bin, peer_text, h, addr_out);
    if (cfg->rate_limit_key_header && h) {
        const struct gw_http_header *f = NULL;
        for (size_t i = 0; i < h->header_count; i++) {
            if (!gw_slice_eq_nocase(h->headers[i].name, cfg->rate_limit_key_header))
                continue;
            if (f) { /* two lines: which budget is the client's is ambiguous */
                copy_text(key_out, GW_CLIENT_KEY_MAX, "ip:", addr_out);
                return false;
            }
            f = &h->headers[i];
        }
        if (f && f->value.len > 0) {
            unsigned char md[EVP_MAX_MD_SIZE];
            unsigned int md_len = 0;
            if (EVP_Digest(f->value.ptr, f->value.len, md, &md_len, EVP_sha256(), NULL) == 1) {
                static const char hex[] = "0123456789abcdef";
                key_out[0] = 'k';
                key_out[1] = ':';
                for (unsigned int i = 0; i < md_len && 2 + 2 * i + 1 < GW_CLIENT_KEY_MAX; i++) {
                    key_out[2 + 2 * i] = hex[md[i] >> 4];
                    key_out[2 + 2 * i + 1] = hex[md[i] & 15];
                }
                key_out[2 + 2 * md_len] = '\0';
                return true;
            }
        }
    }
    copy_text(key_out, GW_CLIENT_KEY_MAX, "ip:", addr_out);
    return true;
}
