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

/* Length of a separator that some backends decode at s (n bytes left):
 * 1 for '\', 3 for "%2F"/"%2f"/"%5C"/"%5c"; 0 when s is none of them. */
static size_t alt_separator(const char *s, size_t n)
{
    if (s[0] == '\\')
        return 1;
    if (n >= 3 && s[0] == '%' &&
        ((s[1] == '2' && (s[2] | 0x20) == 'f') || (s[1] == '5' && (s[2] | 0x20) == 'c')))
        return 3;
    return 0;
}

/* Walks the '/'-segments after the leading '/' and tells whether a ".."
 * finds no segment left to remove. Empty segments ("//") count as segments,
 * as in the RFC's algorithm. */
static bool climbs(const char *path, size_t len)
{
    size_t depth = 0, i = 1;
    while (i <= len) {
        size_t start = i;
        while (i < len && path[i] != '/')
            i++;
        int dots = dot_segment(path + start, i - start);
        if (dots == 2) {
            if (depth == 0)
                return true;
            depth--;
        } else if (dots == 0) {
            depth++;
        }
        i++;
    }
    return false;
}

/* True when a '/'-segment that holds a separator some backend may decode
 * (\, %2F, %5C) also holds a ".." piece between such separators: whether
 * that climbs depends on which of them the backend decodes (nginx decodes
 * %2F, WHATWG URL parsers read '\' as '/'), so no reading is assumed. */
static bool dotdot_beside_alt_separator(const char *path, size_t len)
{
    size_t i = 1;
    while (i < len) {
        size_t piece = i, seg_end = i;
        bool alt = false, dotdot = false;
        while (seg_end < len && path[seg_end] != '/')
            seg_end++;
        while (i <= seg_end) {
            size_t sep = i < seg_end ? alt_separator(path + i, seg_end - i) : 0;
            if (i == seg_end || sep) {
                dotdot |= dot_segment(path + piece, i - piece) == 2;
                alt |= sep != 0;
                i += sep ? sep : 1;
                piece = i;
            } else {
                i++;
            }
        }
        if (alt && dotdot)
            return true;
        i = seg_end + 1;
    }
    return false;
}

bool gw_path_climbs_above_root(const char *path, size_t len)
{
    if (len == 0 || path[0] != '/')
        return false;
    return climbs(path, len) || dotdot_beside_alt_separator(path, len);
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
