/*
 * Request path normalisation (RFC 3986 §5.2.4, §6.2.2): dot-segment removal
 * before the path is joined to BACKEND_URL's base path, and the check that
 * refuses a path climbing above the root. Pure functions over byte ranges,
 * no allocation, no shared state: thread-safe.
 */
#ifndef GW_PATH_H
#define GW_PATH_H

#include "gw/common.h"

/* True when the absolute path (the part of an origin-form request-target
 * before '?', starting with '/') has more ".." segments than segments before
 * them, so that removing its dot-segments (RFC 3986 §5.2.4) would climb above
 * the root: "/../a", "/a/../../b". A segment counts as "." or ".." when it is
 * one or two dots each spelled '.', "%2e" or "%2E". Because backends differ in
 * which of "%2F", "%5C" and '\' they read as a separator before normalising
 * (nginx decodes "%2F", WHATWG URL parsers read '\' as '/'), a "..", between
 * such separators inside one '/'-segment, counts as climbing whatever its
 * depth ("/..%2fadmin", "/a/..\b", "/x\y/..%2f..%2fadmin"): no reading of
 * the path is assumed. An empty or relative path (no leading '/') never
 * climbs. path is only read during the call (NULL allowed when len is 0). */
bool gw_path_climbs_above_root(const char *path, size_t len);

/* Writes the absolute path path[0..len) to out with its dot-segments removed
 * (RFC 3986 §5.2.4; ".", "..", and their "%2e" spellings) and returns the
 * number of bytes written, which is never more than len (at least 1: "/" for
 * an empty result). A ".." at the root is dropped, as the RFC's algorithm
 * does; callers that must refuse such a path check gw_path_climbs_above_root
 * first. Every other byte, percent-encodings included, is copied unchanged.
 * out must have room for len bytes (1 when len is 0) and must not overlap
 * path. path must start with '/' when len > 0. Neither pointer is kept. */
size_t gw_path_remove_dots(const char *path, size_t len, char *out);

#endif
