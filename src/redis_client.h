/*
 * Private: a blocking Redis client over redis_conn.c's transport, for the
 * threads that are not workers (the rules sync of the admin API): connect
 * (through the sentinels in Sentinel mode, TLS for rediss:// or REDIS_TLS,
 * AUTH, SELECT), then commands, each bounded by the timeout. hiredis only
 * formats the commands and parses the replies. A READONLY reply closes the
 * link, so the next connect asks the sentinels (or resolves) again. One
 * thread uses a client at a time (the caller's lock).
 *
 * Redis Cluster (REDIS_CLUSTER_NODES, SPEC.md §12): connect tries the seeds
 * in turn until one answers CLUSTER SLOTS (same credentials and TLS) and
 * opens a link to each master; each command then goes to the master of
 * its key's slot (a link that is not open, to a node a redirect named or
 * one that did not answer at connect, is opened then). The key is the first argument, the first
 * declared key of EVAL/EVALSHA/FCALL, the first stream of XREAD; a command
 * must touch one slot (several keys need one hash tag; Redis answers
 * CROSSSLOT otherwise). Before a reply reaches the caller, -MOVED is
 * followed (the map updated, the command resent there), -ASK too (ASKING
 * then the command on that node, the map kept), at most 5 redirects per
 * command, each counted (gw/redis_redirects.h); -TRYAGAIN is retried up to
 * 4 times after 25, 50, 100 and 200 ms; -CLUSTERDOWN and the rest reach the
 * caller as error replies. A link that fails closes them all (the next
 * connect reads the map again).
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
 * round trip; in cluster mode those of each seed tried, CLUSTER SLOTS,
 * then one connect per master). Returns 0, or -errno with
 * gw_redis_client_error set. */
GW_MUSTCHECK int gw_redis_client_connect(struct gw_redis_client *cl);

/* Queues one command (argv with lens, NULL = strlen each). 0 or -ENOMEM;
 * in cluster mode the link to the key's master is opened here when it is
 * not yet (bounded like a connect): -ENOTCONN before a connect, or -errno
 * when that link failed (everything closed, gw_redis_client_error says
 * why). */
GW_MUSTCHECK int gw_redis_client_append_argv(struct gw_redis_client *cl, int argc,
                                             const char **argv, const size_t *lens);

/* The next reply (sending what is queued), waiting at most the timeout
 * (per link read: a redirect or a TRYAGAIN adds its own), replies in the
 * order the commands were queued: a redisReply the caller frees, or NULL
 * when the link failed (it is then closed; gw_redis_client_error says
 * why). */
redisReply *gw_redis_client_get_reply(struct gw_redis_client *cl);

/* append_argv + get_reply. */
redisReply *gw_redis_client_command_argv(struct gw_redis_client *cl, int argc, const char **argv,
                                         const size_t *lens);

/* True while the link is open (cluster: the slot map was read and no link
 * failed since). */
bool gw_redis_client_connected(const struct gw_redis_client *cl);

/* Text of the last failure (never a password). */
const char *gw_redis_client_error(const struct gw_redis_client *cl);

#endif
