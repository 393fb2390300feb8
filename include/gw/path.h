/*
 * Request path normalisation (RFC 3986 §5.2.4, §6.2.2): dot-segment removal
 * before the path is joined to BACKEND_URL's base path, the check that
 * refuses a path climbing above the root, and the normal form rate-limit
 * rules match against (SPEC.md §10). Pure functions over byte ranges, no
 * allocation, no shared state: thread-safe.
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
 * out must have room for len bytes (1 when len is 0); it may be path itself
 * (the path is then rewritten in place) but must not overlap it otherwise.
 * path must start with '/' when len > 0. Neither pointer is kept. */
size_t gw_path_remove_dots(const char *path, size_t len, char *out);

/* Writes the normal form of a request-target's path, the one rate-limit
 * rules match (SPEC.md §10), so that no spelling of a path escapes its
 * limit. From target[0..len):
 *  - the query and fragment are cut (from the first '?' or '#');
 *  - absolute-form ("http://host/p", RFC 9112 §3.2.2) keeps only its path
 *    ("/" when it has none); asterisk-form ("*") and authority-form are
 *    copied unchanged, as they have no path to normalise;
 *  - percent-encoded unreserved characters (ALPHA, DIGIT, '-', '.', '_',
 *    '~') are decoded (RFC 3986 §2.3, §6.2.2.2); every other encoding is
 *    kept with its hex digits upper-cased (§6.2.2.1), so "%2F" stays an
 *    encoded byte, never a separator; a '%' not followed by two hex digits
 *    is kept as it is;
 *  - runs of '/' are merged into one (as nginx merge_slashes does, before
 *    dot-segments, so "/a//../b" is "/b");
 *  - dot-segments are removed (RFC 3986 §5.2.4, as gw_path_remove_dots; a
 *    ".." at the root is dropped).
 * Case is kept everywhere else (matching is case-sensitive). Returns the
 * bytes written, never more than len (at least 1: "/" for an empty path).
 * out must have room for len bytes (1 when len is 0) and must not overlap
 * target. Neither pointer is kept. Pure and thread-safe. */
size_t gw_path_normalize(const char *target, size_t len, char *out);

#endif
