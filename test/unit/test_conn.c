/*
 * Unit tests of the client connection's state machine (src/conn.c, included
 * to reach its table): the diagram and the transition list atop conn.c name
 * exactly the states of enum conn_state, the list is exactly conn_next[],
 * every state is reachable from IDLE and reaches CLOSED, and set_state
 * applies a legal transition and aborts on an illegal one.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../../src/conn.c"

#include <ctype.h>
#include <stdio.h>
#include <sys/wait.h>

static char *read_source(void)
{
    FILE *f = fopen(GW_SOURCE_DIR "/src/conn.c", "r");
    assert_non_null(f);
    static char text[256 * 1024];
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    return text;
}

/* The opening comment of conn.c, NUL-terminated in place. */
static char *head_comment(void)
{
    char *text = read_source();
    char *end = strstr(text, "*/");
    assert_non_null(end);
    *end = '\0';
    return text;
}

static int state_of(const char *word, size_t len)
{
    for (int s = 0; s < CS_COUNT; s++)
        if (strlen(state_names[s]) == len && strncmp(state_names[s], word, len) == 0)
            return s;
    return -1;
}

/* Every all-capitals word of the diagram is a state, and every state is
 * drawn. */
static void test_diagram_names_the_states(void **state)
{
    (void)state;
    char *c = head_comment();
    char *list = strstr(c, "Transitions");
    assert_non_null(list);
    bool drawn[CS_COUNT] = {false};
    for (char *p = c; p < list;) {
        if (!isupper((unsigned char)*p)) {
            p++;
            continue;
        }
        char *w = p;
        while (isupper((unsigned char)*p) || *p == '_')
            p++;
        size_t len = (size_t)(p - w);
        if (len < 4 || isalnum((unsigned char)*p) || (w > c && isalnum((unsigned char)w[-1])))
            continue; /* a short word or part of a mixed one (HTTP, 408) */
        int s = state_of(w, len);
        if (s < 0)
            fail_msg("diagram names \"%.*s\", which is no state", (int)len, w);
        drawn[s] = true;
    }
    for (int s = 0; s < CS_COUNT; s++)
        if (!drawn[s])
            fail_msg("state %s is missing from the diagram", state_names[s]);
}

/* The transition list in the comment is conn_next[], line for line. */
static void test_transition_list_is_the_table(void **state)
{
    (void)state;
    char *c = head_comment();
    char *p = strstr(c, "Transitions");
    assert_non_null(p);
    unsigned listed[CS_COUNT] = {0};
    bool seen[CS_COUNT] = {false};
    int lines = 0;
    for (char *line = strchr(p, '\n'); line && *line; line = strchr(line + 1, '\n')) {
        char *arrow = strstr(line, "->");
        char *eol = strchr(line + 1, '\n');
        if (!arrow || (eol && arrow > eol))
            continue;
        char *q = line + 1;
        while (*q == ' ' || *q == '*')
            q++;
        char *w = q;
        while (isupper((unsigned char)*q) || *q == '_')
            q++;
        int from = state_of(w, (size_t)(q - w));
        if (from < 0)
            fail_msg("transition line for unknown state \"%.*s\"", (int)(q - w), w);
        assert_false(seen[from]);
        seen[from] = true;
        lines++;
        for (q = arrow + 2; *q && *q != '\n';) {
            if (*q == ' ') {
                q++;
                continue;
            }
            w = q;
            while (*q && *q != ' ' && *q != '\n')
                q++;
            int to = state_of(w, (size_t)(q - w));
            if (to < 0)
                fail_msg("transition to unknown state \"%.*s\"", (int)(q - w), w);
            listed[from] |= 1u << to;
        }
    }
    assert_int_equal(lines, CS_COUNT);
    for (int s = 0; s < CS_COUNT; s++)
        if (listed[s] != conn_next[s])
            fail_msg("state %s: the comment lists %#x, conn_next[] holds %#x", state_names[s],
                     listed[s], conn_next[s]);
}

/* From IDLE every state can be reached, and from every state CLOSED. */
static void test_table_is_connected(void **state)
{
    (void)state;
    unsigned reach = 1u << CS_IDLE;
    for (int round = 0; round < CS_COUNT; round++)
        for (int s = 0; s < CS_COUNT; s++)
            if (reach & (1u << s))
                reach |= conn_next[s];
    assert_int_equal(reach, (1u << CS_COUNT) - 1);
    for (int s = 0; s < CS_CLOSED; s++)
        assert_true(conn_next[s] & (1u << CS_CLOSED));
    assert_int_equal(conn_next[CS_CLOSED], 0);
}

static void test_set_state_enforces_the_table(void **state)
{
    (void)state;
    struct gw_conn c;
    memset(&c, 0, sizeof(c));
    c.io.fd = -1;
    c.state = CS_IDLE;
    gw_conn_set_state(&c, CS_HEAD);
    assert_int_equal(c.state, CS_HEAD);
    gw_conn_set_state(&c, CS_HEAD); /* entering the same state: no-op */
    assert_int_equal(c.state, CS_HEAD);

    /* IDLE -> PROXY is not in the table: the process aborts. */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        c.state = CS_IDLE;
        gw_conn_set_state(&c, CS_PROXY);
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_diagram_names_the_states),
        cmocka_unit_test(test_transition_list_is_the_table),
        cmocka_unit_test(test_table_is_connected),
        cmocka_unit_test(test_set_state_enforces_the_table),
    };
    return cmocka_run_group_tests_name("conn", tests, NULL, NULL);
}
