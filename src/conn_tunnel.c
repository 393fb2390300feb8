/*
 * Upgrade tunnels of the client connection (SPEC.md §13, RFC 9110 §7.8):
 * which Upgrade requests are forwarded, the MAX_TUNNELS places, the switch
 * at a 101 (the exchange ends there and its in-flight slot is given back),
 * the CS_TUNNEL drive over the byte relay of tunnel.c, the idle deadline,
 * and the access log line written when the tunnel closes.
 * Worker thread only; the MAX_TUNNELS count is the one shared atomic.
 */
#include "conn_int.h"

#include "gw/log.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>

/* ---- which upgrades are forwarded ---- */

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Next comma-separated element of [*p, end), OWS trimmed; false at the
 * end. Empty elements are skipped (RFC 9110 §5.6.1). */
static bool next_element(const char **p, const char *end, struct gw_slice *el)
{
    while (*p < end) {
        while (*p < end && (is_ows(**p) || **p == ','))
            (*p)++;
        const char *s = *p;
        while (*p < end && **p != ',')
            (*p)++;
        const char *e = *p;
        while (e > s && is_ows(e[-1]))
            e--;
        if (e > s) {
            *el = (struct gw_slice){s, (size_t)(e - s)};
            return true;
        }
    }
    return false;
}

/* A protocol offered in Upgrade ("name" or "name/version") is listed when
 * the list holds it exactly or holds its name without a version
 * (case-insensitive, RFC 9110 §7.8). */
static bool protocol_listed(const char *list, struct gw_slice proto)
{
    const char *p = list, *end = list + strlen(list);
    const char *slash = memchr(proto.ptr, '/', proto.len);
    size_t name_len = slash ? (size_t)(slash - proto.ptr) : proto.len;
    struct gw_slice el;
    while (next_element(&p, end, &el)) {
        if (el.len == proto.len && strncasecmp(el.ptr, proto.ptr, el.len) == 0)
            return true;
        if (el.len == name_len && strncasecmp(el.ptr, proto.ptr, name_len) == 0)
            return true;
    }
    return false;
}

bool gw_conn_tunnel_wanted(const struct gw_conn *c)
{
    const struct gw_config *cfg = cfg_of(c);
    const struct gw_http_head *h = &c->req->head;
    const char *list = cfg->upgrade_protocols;
    /* An upgrade with a body would need the body framed before the switch;
     * HTTP/1.0 has no Upgrade (RFC 9110 §7.8: a server ignores it). */
    if (!h->upgrade || h->http_minor != 1 || h->has_body || c->draining || list == NULL ||
        strcmp(list, "none") == 0 || !gw_http_head_has_token(h, "connection", "upgrade"))
        return false;
    /* Every protocol offered must be listed: the backend may pick any. */
    size_t offered = 0;
    for (size_t i = 0; i < h->header_count; i++) {
        if (!gw_slice_eq_nocase(h->headers[i].name, "upgrade"))
            continue;
        const char *p = h->headers[i].value.ptr, *end = p + h->headers[i].value.len;
        struct gw_slice el;
        while (next_element(&p, end, &el)) {
            if (!protocol_listed(list, el))
                return false;
            offered++;
        }
    }
    return offered > 0;
}

bool gw_conn_tunnel_reserve(struct gw_conn *c)
{
    struct gw_server *srv = c->w->srv;
    int n = atomic_fetch_add_explicit(&srv->tunnels, 1, memory_order_relaxed);
    if (n >= cfg_of(c)->max_tunnels) {
        atomic_fetch_sub_explicit(&srv->tunnels, 1, memory_order_relaxed);
        return false;
    }
    c->ex.tunnel_reserved = true;
    return true;
}

void gw_conn_tunnel_unreserve(struct gw_conn *c)
{
    if (!c->ex.tunnel_reserved)
        return;
    c->ex.tunnel_reserved = false;
    atomic_fetch_sub_explicit(&c->w->srv->tunnels, 1, memory_order_relaxed);
}

/* ---- the switch ---- */

static void tunnel_on_event(void *ctx)
{
    struct gw_conn *c = ctx;
    if (!c->closing)
        gw_conn_drive(c);
}

int gw_conn_tunnel_start(struct gw_conn *c, const struct gw_http_head *rh)
{
    struct gw_worker *w = c->w;
    struct exchange *ex = &c->ex;
    gw_buf_pool_get(&w->blocks, &c->out);
    size_t before = gw_buf_len(&c->out);
    struct gw_proxy_response_ctx pctx = {.client_minor = 1, .keep_alive = true, .upgrade = true};
    enum gw_framing framing;
    bool must_close = false;
    struct gw_tunnel *t = calloc(1, sizeof(*t));
    if (t == NULL || gw_proxy_write_response_head(&c->out, rh, &pctx, &framing, &must_close) != 0) {
        free(t);
        gw_conn_close(c);
        return -1;
    }
    size_t head_end = gw_buf_len(&c->out);
    ex->resp_bytes += head_end - before;
    ex->status = 101;
    ex->resp = RESP_HEAD_SENT;
    /* The backend's first bytes of the new protocol follow the 101. */
    int fd = gw_upstream_take_socket(c->up, &c->out);
    if (fd < 0) {
        free(t);
        gw_conn_close(c);
        return -1;
    }
    if (gw_tunnel_open(t, &w->loop, &w->blocks, c->io.fd, fd, tunnel_on_event, c) != 0) {
        free(t);
        gw_conn_close(c);
        return -1;
    }
    c->tunnel = t;
    /* What either side sent before the switch is relayed first. */
    t->client.bytes_read = gw_buf_len(&c->in);
    t->backend.bytes_read = gw_buf_len(&c->out) - head_end;
    if (c->client_eof)
        gw_tunnel_client_eof(t);
    gw_conn_set_state(c, CS_TUNNEL);
    /* The exchange is over (counted as proxied, upstream client put, the
     * in-flight slot given back): a tunnel is not a request in flight. Its
     * log line waits for the close (resp is not RESP_DONE). */
    gw_exchange_finish(c, RESULT_PROXIED);
    GW_STAT_INC(&w->stats, tunnels);
    atomic_fetch_add_explicit(&w->stats.tunnels_active, 1, memory_order_relaxed);
    ex->tunnel_start_us = gw_now_us();
    gw_conn_arm(c, (uint64_t)cfg_of(c)->tunnel_idle_timeout_ms);
    return c->closing ? -1 : 0;
}

/* ---- relaying ---- */

void gw_conn_tunnel_drive(struct gw_conn *c)
{
    struct gw_tunnel *t = c->tunnel;
    if (c->closing || t == NULL)
        return;
    for (int i = 0; i < 4 && gw_tunnel_drive(t, &c->in, &c->out); i++)
        ;
    if (gw_tunnel_done(t)) {
        gw_conn_close(c);
        return;
    }
    uint32_t ev = gw_tunnel_client_events(t, &c->in, &c->out);
    if (gw_tunnel_done(t)) {
        gw_conn_close(c);
        return;
    }
    int rc = 0;
    if (t->client.rd_eof && t->client.wr_shut)
        gw_loop_unwatch(&c->w->loop, &c->io); /* both ways ended: only a hang-up is left */
    else
        rc = gw_loop_watch(&c->w->loop, &c->io, ev);
    if (rc != 0)
        gw_conn_close(c);
}

void gw_conn_tunnel_event(struct gw_conn *c, uint32_t events)
{
    if (events & EPOLLERR) {
        gw_conn_close(c); /* reset by the client */
        return;
    }
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP))
        gw_tunnel_client_readable(c->tunnel);
    gw_conn_drive(c);
}

void gw_conn_tunnel_timeout(struct gw_conn *c)
{
    uint64_t now = c->w->loop.now_ms, idle = (uint64_t)cfg_of(c)->tunnel_idle_timeout_ms;
    uint64_t due = c->tunnel->active_ms + idle;
    if (due > now) {
        gw_conn_arm(c, due - now); /* bytes moved since it was armed */
        return;
    }
    gw_debug("conn %d: tunnel idle for %llu ms: closed", c->io.fd, (unsigned long long)idle);
    gw_conn_close(c);
}

void gw_conn_tunnel_end(struct gw_conn *c)
{
    struct gw_tunnel *t = c->tunnel;
    struct exchange *ex = &c->ex;
    if (t->closed)
        return;
    gw_tunnel_close(t);
    gw_conn_tunnel_unreserve(c);
    atomic_fetch_sub_explicit(&c->w->stats.tunnels_active, 1, memory_order_relaxed);
    if (!cfg_of(c)->access_log || !c->req)
        return;
    uint64_t now = gw_now_us();
    struct gw_access_entry e = {
        .client = ex->client_ident[0] ? ex->client_ident : c->client_addr,
        .method = c->req->head.method_name,
        .path = c->req->head.target,
        .status = 101,
        .bytes_sent = ex->resp_bytes + t->backend.bytes_read,
        .duration_ms = (double)(now - ex->start_us) / 1000.0,
        .upstream_ms = ex->upstream_start_us ? (double)(now - ex->upstream_start_us) / 1000.0 : -1,
        .limited = ex->limited,
        .tunnel = true,
        .tunnel_bytes_to_backend = t->client.bytes_read,
        .tunnel_bytes_to_client = t->backend.bytes_read,
        .tunnel_ms = (double)(now - ex->tunnel_start_us) / 1000.0,
    };
    gw_log_access(&e);
}
