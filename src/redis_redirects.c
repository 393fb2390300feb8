/*
 * Redis Cluster redirect counts, key slots and the parsers of CLUSTER SLOTS
 * and of MOVED/ASK (gw/redis_redirects.h): two
 * relaxed atomics, and the CRC16 of the cluster specification, a byte at a
 * time from a 256-entry table made once (the Cluster store slots every key
 * of every batch: bit by bit it was 2,500 instructions per request).
 */
#include "gw/redis_redirects.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <string.h>
#include <stdatomic.h>

static _Atomic uint64_t g_moved = 0; /* -MOVED replies followed */
static _Atomic uint64_t g_ask = 0;   /* -ASK replies followed */

void gw_redis_redirect_count(bool ask)
{
    atomic_fetch_add_explicit(ask ? &g_ask : &g_moved, 1, memory_order_relaxed);
}

uint64_t gw_redis_redirects_total(bool ask)
{
    return atomic_load_explicit(ask ? &g_ask : &g_moved, memory_order_relaxed);
}

/* CRC16-XMODEM (CCITT polynomial 0x1021, initial value 0, no reflection):
 * table[b] is the CRC of the byte b alone, shifted through. */
static uint16_t g_crc_table[256];
static pthread_once_t g_crc_once = PTHREAD_ONCE_INIT;

static void crc_table_make(void)
{
    for (unsigned b = 0; b < 256; b++) {
        uint16_t crc = (uint16_t)(b << 8);
        for (int k = 0; k < 8; k++)
            crc = (crc & 0x8000) != 0 ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
        g_crc_table[b] = crc;
    }
}

static uint16_t crc16(const unsigned char *p, size_t len)
{
    pthread_once(&g_crc_once, crc_table_make);
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++)
        crc = (uint16_t)((crc << 8) ^ g_crc_table[((crc >> 8) ^ p[i]) & 0xff]);
    return crc;
}

unsigned gw_redis_key_slot(const char *key, size_t len)
{
    size_t open = 0;
    while (open < len && key[open] != '{')
        open++;
    if (open < len) {
        size_t close = open + 1;
        while (close < len && key[close] != '}')
            close++;
        /* "{}" or no '}': the whole key (the specification's rule). */
        if (close < len && close > open + 1) {
            key += open + 1;
            len = close - open - 1;
        }
    }
    return crc16((const unsigned char *)key, len) & (GW_REDIS_CLUSTER_SLOTS - 1);
}

static bool str_elem(const redisReply *e)
{
    return e->type == REDIS_REPLY_STRING || e->type == REDIS_REPLY_STATUS;
}

int gw_redis_parse_cluster_slots(const void *reply, struct gw_redis_slot_range *out, size_t cap)
{
    const redisReply *rep = reply;
    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY)
        return -EPROTO;
    size_t n = 0;
    for (size_t i = 0; i < rep->elements; i++) {
        const redisReply *e = rep->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
            e->element[0]->type != REDIS_REPLY_INTEGER ||
            e->element[1]->type != REDIS_REPLY_INTEGER ||
            e->element[2]->type != REDIS_REPLY_ARRAY || e->element[2]->elements < 2 ||
            !str_elem(e->element[2]->element[0]) ||
            e->element[2]->element[1]->type != REDIS_REPLY_INTEGER)
            return -EPROTO;
        long long lo = e->element[0]->integer, hi = e->element[1]->integer;
        long long port = e->element[2]->element[1]->integer;
        const redisReply *h = e->element[2]->element[0];
        if (lo < 0 || hi >= GW_REDIS_CLUSTER_SLOTS || lo > hi || port <= 0 || port > 65535)
            return -EPROTO;
        if (n == cap)
            return -EPROTO;
        /* "?": the node has no endpoint of the preferred type (its slots
         * stay unserved); "": the node asked (an unknown endpoint). */
        if (h->len == 1 && h->str[0] == '?')
            continue;
        bool asked = h->len == 0;
        out[n++] = (struct gw_redis_slot_range){.lo = (unsigned)lo,
                                                .hi = (unsigned)hi,
                                                .host = asked ? NULL : h->str,
                                                .host_len = asked ? 0 : h->len,
                                                .port = (int)port};
    }
    return (int)n;
}

bool gw_redis_parse_redirect(const char *msg, bool *ask, unsigned *slot, const char **host,
                             size_t *host_len, int *port)
{
    const char *p;
    if (strncmp(msg, "MOVED ", 6) == 0) {
        *ask = false;
        p = msg + 6;
    } else if (strncmp(msg, "ASK ", 4) == 0) {
        *ask = true;
        p = msg + 4;
    } else {
        return false;
    }
    unsigned long v = 0;
    size_t d = 0;
    for (; p[d] >= '0' && p[d] <= '9' && d < 6; d++)
        v = v * 10 + (unsigned long)(p[d] - '0');
    if (d == 0 || v >= GW_REDIS_CLUSTER_SLOTS || p[d] != ' ')
        return false;
    *slot = (unsigned)v;
    const char *addr = p + d + 1;
    const char *colon = strrchr(addr, ':');
    if (colon == NULL)
        return false;
    unsigned long pt = 0;
    size_t pd = 0;
    for (; colon[1 + pd] >= '0' && colon[1 + pd] <= '9' && pd < 6; pd++)
        pt = pt * 10 + (unsigned long)(colon[1 + pd] - '0');
    if (pd == 0 || colon[1 + pd] != '\0' || pt == 0 || pt > 65535)
        return false;
    size_t hl = (size_t)(colon - addr);
    if (hl >= 2 && addr[0] == '[' && addr[hl - 1] == ']') {
        addr++;
        hl -= 2;
    }
    if (hl > 255 || memchr(addr, ' ', hl) != NULL || (hl == 0 && colon != addr))
        return false;
    *host = addr;
    *host_len = hl;
    *port = (int)pt;
    return true;
}
