/*
 * Test certificates made with the openssl command (gwt_tls.h).
 */
#include "gwt_tls.h"

#include "gwtest.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int gwt_tls_certs_make(struct gwt_tls_certs *c)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->dir, sizeof(c->dir), "/tmp/gw-tls-XXXXXX");
    if (mkdtemp(c->dir) == NULL)
        return -errno;
    snprintf(c->ca, sizeof(c->ca), "%s/ca.pem", c->dir);
    snprintf(c->ca_key, sizeof(c->ca_key), "%s/ca.key", c->dir);
    snprintf(c->srv, sizeof(c->srv), "%s/server.pem", c->dir);
    snprintf(c->srv_key, sizeof(c->srv_key), "%s/server.key", c->dir);
    snprintf(c->cli, sizeof(c->cli), "%s/client.pem", c->dir);
    snprintf(c->cli_key, sizeof(c->cli_key), "%s/client.key", c->dir);
    snprintf(c->wrong_ca, sizeof(c->wrong_ca), "%s/wrong-ca.pem", c->dir);
    /* EC keys: quick to make. The server certificate names 127.0.0.1 and
     * localhost, as Redis TLS deployments do; it may also authenticate as
     * a client (Redis replicas and sentinels present it to their peers). */
    static const char script[] =
        "set -e; cd \"$1\"\n"
        "K='-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes'\n"
        "openssl req -x509 $K -keyout ca.key -out ca.pem -days 2 -subj /CN=gw-test-ca\n"
        "openssl req -x509 $K -keyout wrong-ca.key -out wrong-ca.pem -days 2 -subj /CN=other-ca\n"
        "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n"
        "extendedKeyUsage=serverAuth,clientAuth\\n' > srv.ext\n"
        "printf 'extendedKeyUsage=clientAuth\\n' > cli.ext\n"
        "openssl req -new $K -keyout server.key -out server.csr -subj /CN=localhost\n"
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
        "-out server.pem -extfile srv.ext\n"
        "openssl req -new $K -keyout client.key -out client.csr -subj /CN=gateway\n"
        "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
        "-out client.pem -extfile cli.ext\n";
    const char *argv[] = {"sh", "-c", script, "sh", c->dir, NULL};
    char *err = NULL;
    int rc = gwt_run(argv, NULL, 30000, NULL, &err);
    if (rc != 0 && err != NULL)
        fprintf(stderr, "openssl failed (%d): %s\n", rc, err);
    free(err);
    return rc;
}

void gwt_tls_certs_remove(struct gwt_tls_certs *c)
{
    if (c->dir[0] == '\0')
        return;
    const char *argv[] = {"rm", "-rf", c->dir, NULL};
    (void)gwt_run(argv, NULL, 10000, NULL, NULL);
    c->dir[0] = '\0';
}
