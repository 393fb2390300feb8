/*
 * libFuzzer target for the HTTP/1.x response parser (src/http1.c): the
 * request target's driver and invariants, run with a response parser
 * (1xx, HEAD no_body, read-until-close via finish).
 */
#define FUZZ_KIND GW_HTTP_RESPONSE
#include "fuzz_http1_request.c"
