/*
 * Redis Cluster redirect counts and key slots (gw/redis_redirects.h): two
 * relaxed atomics, and the CRC16 of the cluster specification, a byte at a
 * time from a 256-entry table made once (the Cluster store slots every key
 * of every batch: bit by bit it was 2,500 instructions per request).
 */
#include "gw/redis_redirects.h"

#include <pthread.h>
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
