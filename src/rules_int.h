/*
 * Private to the rules module (src/rules.c, src/rules_yaml.c,
 * src/rules_match.c): the YAML reader that yields the same jansson tree as
 * a JSON file, and the matcher built once per load.
 */
#ifndef GW_RULES_INT_H
#define GW_RULES_INT_H

#include "gw/rules.h"

#include <jansson.h>

/* Reads one YAML document of len bytes into a jansson tree: mappings
 * become objects (keys must be scalars, a repeated key is an error),
 * sequences arrays; a quoted scalar is a string, a plain one is resolved
 * as YAML 1.2's core schema does (null, true/false, integer, float, else
 * string). Aliases, several documents and nesting deeper than 64 are
 * refused. Returns the tree (caller owns one reference), or NULL with a
 * one-line reason ("line L, column C: ...") in why. Thread-safe. */
json_t *gw_rules_yaml_read(const char *text, size_t len, char *why, size_t why_len);

/* Builds r->index from r->limits. Returns 0 or -ENOMEM. */
GW_MUSTCHECK int gw_rules_index_create(struct gw_rules *r);

/* Frees an index (NULL allowed). */
void gw_rules_index_destroy(struct gw_rules_index *ix);

#endif
