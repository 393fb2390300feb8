/*
 * Private: a blocking Redis client over redis_conn.c's transport, for the
 * threads that are not workers (the rules sync of the admin API): connect
 * (through the sentinels in Sentinel mode, TLS for rediss:// or REDIS_TLS,
 * AUTH, SELECT), then commands, each bounded by the timeout. hiredis only
 * formats the commands and parses the replies. A READONLY reply closes the
 * link, so the next connect asks the sentinels (or resolves) again. One
 * thread uses a client at a time (the caller's lock).
 */
#ifndef GW_REDIS_CLIENT_H
#define GW_REDIS_CLIENT_H

#include "redis_conn.h"

struct gw_redis_client;

/* Creates a disconnected client for target t (borrowed, must outlive it);
 * timeout_ms bounds each step. Returns 0, -ENOMEM, or -EINVAL with the
 * reason in why (TLS settings). */
GW_MUSTCHECK int gw_redis_client_create(struct gw_redis_client **out,
                                        const struct gw_redis_target *t, int timeout_ms, char *why,
                                        size_t why_len);

/* Closes the link and frees the client. Safe with NULL. */
void gw_redis_client_destroy(struct gw_redis_client *cl);

/* Connects (a link already open is closed first), blocking for at most a
 * few timeouts (each sentinel's, then connect, TLS and the AUTH/SELECT
 * round trip). Returns 0, or -errno with gw_redis_client_error set. */
GW_MUSTCHECK int gw_redis_client_connect(struct gw_redis_client *cl);

/* Queues one command (argv with lens, NULL = strlen each). 0 or -ENOMEM. */
GW_MUSTCHECK int gw_redis_client_append_argv(struct gw_redis_client *cl, int argc,
                                             const char **argv, const size_t *lens);

/* The next reply (sending what is queued), waiting at most the timeout:
 * a redisReply the caller frees, or NULL when the link failed (it is then
 * closed; gw_redis_client_error says why). */
redisReply *gw_redis_client_get_reply(struct gw_redis_client *cl);

/* append_argv + get_reply. */
redisReply *gw_redis_client_command_argv(struct gw_redis_client *cl, int argc, const char **argv,
                                         const size_t *lens);

/* True while the link is open. */
bool gw_redis_client_connected(const struct gw_redis_client *cl);

/* Text of the last failure (never a password). */
const char *gw_redis_client_error(const struct gw_redis_client *cl);

#endif
