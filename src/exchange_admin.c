/*
 * Requests on the admin listener (SPEC.md §11), the connection's side: the
 * bearer check before anything else, the route, the body of the rules
 * endpoints collected in ADMIN (at most GW_ADMIN_BODY_MAX bytes), and
 * the answer. Never rate limited, never an in-flight slot, never
 * forwarded. Worker thread only.
 */
#include "conn_int.h"

#include "admin.h"
#include "admin_api.h"
#include "gw/log.h"
#include "gw/response.h"

#include <string.h>

/* The answer written from where we stand may leave the connection open
 * only when the client wants it and an unread body will come anyway (no
 * 100-continue it waits for). */
static bool keep_of(const struct gw_conn *c)
{
    bool keep = c->ex.keep_alive && !c->draining && !c->must_close;
    if (c->ex.req != REQ_DONE && c->req->head.expect_continue)
        keep = false;
    return keep;
}

static void problem(struct gw_conn *c, int status, const char *detail, const char *extra)
{
    bool keep = keep_of(c);
    const struct gw_http_head *h = &c->req->head;
    gw_buf_pool_get(&c->w->blocks, &c->out);
    size_t before = gw_buf_len(&c->out);
    if (gw_admin_api_problem(&c->out, status, detail, NULL, 0, extra, keep, h->http_minor,
                             h->method == HTTP_HEAD) != 0) {
        gw_conn_close(c);
        return;
    }
    gw_exchange_answered(c, status, gw_buf_len(&c->out) - before, keep);
}

/* Answers route r with the body collected (or none). */
static void answer(struct gw_conn *c, enum gw_admin_route r, const char *body, size_t len)
{
    bool keep = keep_of(c);
    const struct gw_http_head *h = &c->req->head;
    gw_buf_pool_get(&c->w->blocks, &c->out);
    size_t before = gw_buf_len(&c->out);
    int status = 0, rc;
    if (r == GW_ADMIN_ROUTE_HEALTH || r == GW_ADMIN_ROUTE_STATS || r == GW_ADMIN_ROUTE_METRICS) {
        enum gw_admin_endpoint ep = r == GW_ADMIN_ROUTE_HEALTH  ? GW_ADMIN_HEALTH
                                    : r == GW_ADMIN_ROUTE_STATS ? GW_ADMIN_STATS
                                                                : GW_ADMIN_METRICS;
        rc = gw_admin_respond(c->w, ep, h->target, &c->out, keep, h->http_minor,
                              h->method == HTTP_HEAD, &status);
    } else {
        rc = gw_admin_api_respond(c->w, r, h, body, len, &c->out, keep, &status);
    }
    if (rc != 0) {
        gw_conn_close(c);
        return;
    }
    gw_exchange_answered(c, status, gw_buf_len(&c->out) - before, keep);
}

void gw_exchange_admin_head(struct gw_conn *c)
{
    const struct gw_config *cfg = cfg_of(c);
    const struct gw_http_head *h = &c->req->head;
    if (cfg->admin_token != NULL) {
        const struct gw_http_header *auth = gw_http_head_find(h, "Authorization");
        struct gw_slice v = auth ? auth->value : (struct gw_slice){NULL, 0};
        if (!gw_admin_api_token_ok(cfg->admin_token, v)) {
            problem(c, 401,
                    auth ? "the bearer token is not the one of ADMIN_TOKEN"
                         : "this admin endpoint needs Authorization: Bearer <ADMIN_TOKEN>",
                    auth ? "WWW-Authenticate: Bearer realm=\"gateway-admin\", "
                           "error=\"invalid_token\"\r\n"
                         : "WWW-Authenticate: Bearer realm=\"gateway-admin\"\r\n");
            return;
        }
    }
    const char *allow = NULL;
    enum gw_admin_route r = gw_admin_api_route(cfg, h->method, h->target, &allow);
    if (r == GW_ADMIN_ROUTE_NOT_FOUND) {
        problem(c, 404, "no such admin endpoint", NULL);
        return;
    }
    if (r == GW_ADMIN_ROUTE_BAD_METHOD) {
        char extra[96];
        snprintf(extra, sizeof(extra), "Allow: %s\r\n", allow ? allow : "GET");
        problem(c, 405, "this method is not allowed on this admin endpoint", extra);
        return;
    }
    if (!gw_admin_api_route_has_body(r)) {
        answer(c, r, NULL, 0);
        return;
    }
    if (h->content_length > (int64_t)GW_ADMIN_BODY_MAX) {
        gw_exchange_respond_error(c, 413, "an admin request body is limited to 1 MiB", true);
        return;
    }
    gw_buf_clear(&c->admin_body);
    gw_conn_set_state(c, CS_ADMIN);
    gw_conn_arm(c, (uint64_t)cfg->client_timeout_ms);
    if (h->expect_continue && h->http_minor >= 1 && h->has_body) {
        gw_buf_pool_get(&c->w->blocks, &c->out);
        if (gw_response_write_continue(&c->out) != 0)
            gw_conn_close(c);
        c->req->head.expect_continue = false; /* once */
    }
    /* A body-less PUT completes in the same pump, through
     * gw_exchange_admin_done. */
}

int gw_exchange_admin_body(struct gw_conn *c, const char *data, size_t len)
{
    if (gw_buf_len(&c->admin_body) + len > GW_ADMIN_BODY_MAX) {
        gw_buf_release(&c->admin_body);
        gw_exchange_respond_error(c, 413, "an admin request body is limited to 1 MiB", true);
        return 0;
    }
    if (gw_buf_append(&c->admin_body, data, len) != 0) {
        gw_buf_release(&c->admin_body);
        gw_exchange_respond_error(c, 503, "out of memory", true);
    }
    return 0;
}

void gw_exchange_admin_done(struct gw_conn *c)
{
    const struct gw_http_head *h = &c->req->head;
    enum gw_admin_route r = gw_admin_api_route(cfg_of(c), h->method, h->target, NULL);
    /* NUL-ended for the parser's convenience (len excludes it). */
    if (gw_buf_append(&c->admin_body, "", 1) != 0) {
        gw_conn_close(c);
        return;
    }
    size_t len = gw_buf_len(&c->admin_body) - 1;
    answer(c, r, gw_buf_head(&c->admin_body), len);
    gw_buf_release(&c->admin_body);
}

void gw_exchange_admin_body_timeout(struct gw_conn *c)
{
    uint64_t now = c->w->loop.now_ms, limit = (uint64_t)cfg_of(c)->client_timeout_ms;
    uint64_t last = c->client_rx_ms;
    if (now - last < limit) {
        gw_conn_arm(c, last + limit - now);
        return;
    }
    gw_buf_release(&c->admin_body);
    c->ex.req = REQ_DONE; /* nothing more is read: the connection closes */
    c->must_close = true;
    gw_exchange_respond_error(c, 408, "the request body was not received in time", false);
}

void gw_exchange_admin_release(struct gw_conn *c)
{
    gw_buf_release(&c->admin_body);
}
