/*
 * Dot-segment removal and the above-the-root check for request paths
 * (RFC 3986 §5.2.4). A base path is only a boundary if no spelling of "../"
 * can cross it, so both functions treat "%2e" like '.'.
 */
#include "gw/path.h"

/* 1 for a "." segment, 2 for "..", 0 for anything else; each dot may be
 * spelled '.', "%2e" or "%2E" (RFC 3986 §2.3: an encoded unreserved
 * character is the same character). */
static int dot_segment(const char *s, size_t n)
{
    int dots = 0;
    size_t i = 0;
    while (i < n) {
        if (s[i] == '.') {
            i++;
        } else if (n - i >= 3 && s[i] == '%' && s[i + 1] == '2' && (s[i + 2] | 0x20) == 'e') {
            i += 3;
        } else {
            return 0;
        }
        if (++dots > 2)
            return 0;
    }
    return dots;
}

/* Length of the separator at s (n bytes left): 1 for '/', and with alt also
 * for '\', 3 for "%2F"/"%2f"/"%5C"/"%5c"; 0 when s is no separator. */
static size_t separator(const char *s, size_t n, bool alt)
{
    if (s[0] == '/')
        return 1;
    if (!alt)
        return 0;
    if (s[0] == '\\')
        return 1;
    if (n >= 3 && s[0] == '%' &&
        ((s[1] == '2' && (s[2] | 0x20) == 'f') || (s[1] == '5' && (s[2] | 0x20) == 'c')))
        return 3;
    return 0;
}

/* Walks the segments after the leading '/' and tells whether a ".." finds no
 * segment left to remove. Empty segments ("//") count as segments, as in
 * the RFC's algorithm. */
static bool climbs(const char *path, size_t len, bool alt)
{
    size_t depth = 0, i = 1;
    while (i <= len) {
        size_t start = i, sep = 0;
        while (i < len && (sep = separator(path + i, len - i, alt)) == 0)
            i++;
        int dots = dot_segment(path + start, i - start);
        if (dots == 2) {
            if (depth == 0)
                return true;
            depth--;
        } else if (dots == 0) {
            depth++;
        }
        i += sep ? sep : 1; /* past the separator, or past the end */
    }
    return false;
}

bool gw_path_climbs_above_root(const char *path, size_t len)
{
    if (len == 0 || path[0] != '/')
        return false;
    return climbs(path, len, false) || climbs(path, len, true);
}

size_t gw_path_remove_dots(const char *path, size_t len, char *out)
{
    char *o = out;
    size_t i = 1;
    while (i <= len && len > 0) {
        size_t start = i;
        while (i < len && path[i] != '/')
            i++;
        bool last = i >= len;
        int dots = dot_segment(path + start, i - start);
        if (dots == 2) {
            /* Drop the last output segment with its leading '/'. */
            while (o > out && *--o != '/')
                ;
        }
        if (dots == 0) {
            *o++ = '/';
            memcpy(o, path + start, i - start);
            o += i - start;
        } else if (last) {
            *o++ = '/'; /* "/a/." and "/a/b/.." end in a directory: "/a/" */
        }
        i++;
    }
    if (o == out)
        *o++ = '/';
    return (size_t)(o - out);
}
