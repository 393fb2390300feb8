/*
 * Test certificates for TLS to Redis (issue 15), made by the openssl
 * command in a fresh temporary folder: a CA, a server certificate for
 * 127.0.0.1 and localhost (subjectAltName) signed by it, a client
 * certificate signed by it, and a second CA that signed nothing of these.
 */
#ifndef GWT_TLS_H
#define GWT_TLS_H

#include <stddef.h>

struct gwt_tls_certs {
    char dir[128];               /* the folder (remove with gwt_tls_certs_remove) */
    char ca[192], ca_key[192];   /* the CA */
    char srv[192], srv_key[192]; /* server certificate and key */
    char cli[192], cli_key[192]; /* client certificate and key */
    char wrong_ca[192];          /* a CA that signed none of them */
};

/* Makes the certificates (EC P-256, valid 2 days). Returns 0, or -errno /
 * the openssl exit code (its stderr written to ours). */
int gwt_tls_certs_make(struct gwt_tls_certs *c);

/* Removes the folder. Safe on a zeroed struct. */
void gwt_tls_certs_remove(struct gwt_tls_certs *c);

#endif
