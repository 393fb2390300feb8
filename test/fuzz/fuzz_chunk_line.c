/*
 * libFuzzer target for the chunk-size line pre-pass (src/http1.c,
 * gw_http_chunk_line_check: RFC 9112 §7.1.1 chunk extensions). Each input is
 * one candidate line. Its verdict must equal an independent recursive
 * descent over the RFC grammar written here, and the whole parser must
 * agree with it: a request (CRLF) and a response (bare LF) carrying the line
 * in a chunked body decode exactly size bytes when it is valid and are
 * refused with the same reason when it is not.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw/http1.h"

#include "fuzz_check.h"

/* ---- the reference: RFC 9112 §7.1.1 by recursive descent --------------- */

static int at(const uint8_t *s, size_t n, size_t i)
{
    return i < n ? s[i] : -1;
}

static size_t bws(const uint8_t *s, size_t n, size_t i)
{
    while (at(s, n, i) == ' ' || at(s, n, i) == '\t')
        i++;
    return i;
}

static bool tchar(int c)
{
    return c > 0 && c < 0x7f &&
           ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
            strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* token: one past its end, or (size_t)-1 */
static size_t token(const uint8_t *s, size_t n, size_t i)
{
    size_t j = i;
    while (tchar(at(s, n, j)))
        j++;
    return j > i ? j : (size_t)-1;
}

static size_t quoted(const uint8_t *s, size_t n, size_t i)
{
    if (at(s, n, i) != '"')
        return (size_t)-1;
    for (i++;;) {
        int c = at(s, n, i);
        if (c < 0)
            return (size_t)-1;
        if (c == '"')
            return i + 1;
        if (c == '\\') {
            int q = at(s, n, i + 1);
            if (!(q == '\t' || (q >= 0x20 && q != 0x7f)))
                return (size_t)-1;
            i += 2;
        } else if (c == '\t' || c == ' ' || c == '!' || (c >= 0x23 && c <= 0x7e && c != '\\') ||
                   c >= 0x80) {
            i++;
        } else {
            return (size_t)-1;
        }
    }
}

/* One BWS ";" BWS name [ BWS "=" BWS value ]. */
static size_t extension(const uint8_t *s, size_t n, size_t i)
{
    i = bws(s, n, i);
    if (at(s, n, i) != ';')
        return (size_t)-1;
    i = token(s, n, bws(s, n, i + 1));
    if (i == (size_t)-1)
        return i;
    size_t j = bws(s, n, i);
    if (at(s, n, j) != '=')
        return i;
    size_t k = bws(s, n, j + 1);
    size_t v = token(s, n, k);
    return v != (size_t)-1 ? v : quoted(s, n, k);
}

static bool hexval(int c, int *v)
{
    if (c >= '0' && c <= '9')
        *v = c - '0';
    else if (c >= 'a' && c <= 'f')
        *v = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F')
        *v = c - 'A' + 10;
    else
        return false;
    return true;
}

/* 0 valid (*size), 1 invalid, 2 extensions too long. */
static int reference(const uint8_t *s, size_t n, uint64_t *size)
{
    size_t i = 0, significant = 0;
    uint64_t v = 0;
    int d;
    while (hexval(at(s, n, i), &d)) {
        if (significant > 0 || d != 0)
            significant++;
        v = v * 16 + (uint64_t)d;
        i++;
    }
    if (i == 0 || significant > 16)
        return 1;
    if (n > GW_HTTP_MAX_CHUNK_LINE || n - i > GW_HTTP_MAX_CHUNK_EXT)
        return i >= GW_HTTP_MAX_CHUNK_LINE ? 1 : 2;
    while (i < n) {
        i = extension(s, n, i);
        if (i == (size_t)-1)
            return 1;
    }
    *size = v;
    return 0;
}

/* ---- the parser around it ------------------------------------------------ */

struct body {
    uint64_t len;
};

static int sink(void *ctx, const char *data, size_t len)
{
    struct body *b = ctx;
    for (size_t i = 0; i < len; i++)
        CHECK(data[i] == 'x');
    b->len += len;
    return 0;
}

/* Parses head + line + eol + [size 'x' + eol] + "0" eol eol in two slices
 * (split inside the line). Returns the result; *body the bytes decoded. */
static enum gw_http_result parse(enum gw_http_kind kind, const uint8_t *line, size_t n,
                                 bool with_data, uint64_t size, const char **why, uint64_t *body)
{
    const char *head = kind == GW_HTTP_REQUEST
                           ? "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                           : "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    const char *eol = kind == GW_HTTP_REQUEST ? "\r\n" : "\n";
    size_t hl = strlen(head), el = strlen(eol);
    size_t cap = hl + n + 3 * el + (with_data ? size + el : 0) + 4;
    char *msg = malloc(cap);
    CHECK(msg != NULL);
    size_t m = 0;
    memcpy(msg + m, head, hl);
    m += hl;
    memcpy(msg + m, line, n);
    m += n;
    memcpy(msg + m, eol, el);
    m += el;
    if (with_data) {
        memset(msg + m, 'x', size);
        m += size;
        memcpy(msg + m, eol, el);
        m += el;
    }
    if (!(with_data == false && size == 0)) {
        msg[m++] = '0'; /* the line was not the last chunk: add one */
        memcpy(msg + m, eol, el);
        m += el;
    }
    memcpy(msg + m, eol, el); /* the empty trailer section */
    m += el;

    struct body b = {0};
    struct gw_http_parser p;
    CHECK(gw_http_parser_init(&p, kind, 4096, 0, sink, &b) == 0);
    size_t split = hl + n / 2, off = 0, used = 0;
    enum gw_http_result r = GW_HTTP_NEED_MORE;
    for (int guard = 0; guard < 16; guard++) {
        size_t end = off < split ? split : m;
        r = gw_http_parser_execute(&p, msg + off, end - off, &used);
        off += used;
        if (r == GW_HTTP_DONE || r == GW_HTTP_ERROR || (r == GW_HTTP_NEED_MORE && off == m))
            break;
    }
    *why = p.error_detail;
    *body = b.len;
    gw_http_parser_deinit(&p);
    free(msg);
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > GW_HTTP_MAX_CHUNK_LINE + 40)
        return 0;
    uint64_t got = 0, want = 0;
    const char *why = gw_http_chunk_line_check((const char *)data, size, &got);
    int ref = reference(data, size, &want);
    CHECK((why == NULL) == (ref == 0));
    if (ref == 0)
        CHECK(got == want);
    if (ref == 2)
        CHECK(strcmp(why, "chunk extensions too long") == 0);

    /* The whole parser: a line holding CR or LF is another line structure. */
    if (memchr(data, '\r', size) || memchr(data, '\n', size))
        return 0;
    bool small = ref == 0 && want <= 64; /* the data fits the test: decode it whole */
    if (ref == 0 && !small)
        return 0;
    for (int k = 0; k < 2; k++) {
        enum gw_http_kind kind = k ? GW_HTTP_RESPONSE : GW_HTTP_REQUEST;
        const char *perr = NULL;
        uint64_t body = 0;
        enum gw_http_result r = parse(kind, data, size, small && want > 0, want, &perr, &body);
        if (ref != 0) {
            CHECK(r == GW_HTTP_ERROR);
            CHECK(perr != NULL && strcmp(perr, why) == 0);
        } else if (small) {
            CHECK(r == GW_HTTP_DONE);
            CHECK(body == want);
        }
    }
    return 0;
}
