/*
 * Dot-segment removal and the above-the-root check for request paths
 * (RFC 3986 §5.2.4), and the normal form rate-limit rules match (§6.2.2).
 * A base path is only a boundary if no spelling of "../" can cross it, so
 * the dot functions treat "%2e" like '.'.
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
            memmove(o, path + start, i - start); /* out may be path (in place) */
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

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
        return (c | 0x20) - 'a' + 10;
    return -1;
}

/* RFC 3986 §2.3 unreserved. */
static bool unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

size_t gw_path_normalize(const char *target, size_t len, char *out)
{
    size_t end = 0;
    while (end < len && target[end] != '?' && target[end] != '#')
        end++;
    const char *p = target;
    if (end > 0 && p[0] != '/') {
        /* absolute-form: skip "scheme://authority"; anything else has no
         * path to normalise (asterisk-form, authority-form). */
        const char *sep = end >= 3 ? memchr(p, ':', end) : NULL;
        if (sep == NULL || (size_t)(sep - p) + 3 > end || sep[1] != '/' || sep[2] != '/') {
            memcpy(out, p, end);
            return end;
        }
        const char *auth = sep + 3;
        const char *slash = memchr(auth, '/', end - (size_t)(auth - p));
        if (slash == NULL) {
            out[0] = '/';
            return 1;
        }
        end -= (size_t)(slash - p);
        p = slash;
    }
    /* Pass 1: decode unreserved, upper-case the rest, merge '/' runs. */
    size_t o = 0;
    for (size_t i = 0; i < end; i++) {
        char c = p[i];
        if (c == '%' && i + 2 < end) {
            int hi = hex_digit(p[i + 1]), lo = hex_digit(p[i + 2]);
            if (hi >= 0 && lo >= 0) {
                unsigned char v = (unsigned char)(hi * 16 + lo);
                if (unreserved(v)) {
                    out[o++] = (char)v;
                } else {
                    static const char hex[] = "0123456789ABCDEF";
                    out[o++] = '%';
                    out[o++] = hex[hi];
                    out[o++] = hex[lo];
                }
                i += 2;
                continue;
            }
        }
        if (c == '/' && o > 0 && out[o - 1] == '/')
            continue;
        out[o++] = c;
    }
    /* Pass 2: dot-segments, in place (a decoded "%2e" is now a '.'). */
    return gw_path_remove_dots(out, o, out);
}
