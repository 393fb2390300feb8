/*
 * Reloading RATE_LIMIT_RULES_FILE (gw/rules_reload.h): one thread that
 * waits on an eventfd (SIGHUP requests, stop) and an inotify descriptor
 * watching the file's directory, stats the file every second, and re-reads,
 * hashes and validates it when something may have changed. Workers never
 * wait for any of it: they see a new version through the holder.
 *
 * Threads: gw_rules_reloader_request and _counts may run on any thread
 * (atomics, an eventfd write). Every other field after start is touched only
 * by the reloader thread (start runs the first read itself, before the
 * thread exists).
 */
#include "gw/rules_reload.h"

#include "gw/log.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define HASH_LEN         32   /* SHA-256 */
#define MAX_LOGGED_LINES 20   /* error lines logged per failed reload; the rest counted */
#define RACY_MS          2000 /* see recently_modified */
#define BUSY_MAX_MS      2000 /* longest a read waits for a file being written */

/* The directory entries' events that may change what the path reads. */
#define WATCH_MASK                                                                                 \
    (IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_CLOSE_WRITE | IN_MODIFY | IN_DELETE |            \
     IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)

/* What stat says about the file the path names now (symlinks followed). */
struct fingerprint {
    int err; /* errno of stat/open, 0 when the fields below are valid */
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime, ctime;
};

/* Why a read happens: it decides what counts and what is logged. */
enum trigger {
    TRIGGER_START = 0, /* gw_rules_reloader_start: remember the state */
    TRIGGER_CHANGE,    /* an event or a changed stat */
    TRIGGER_SIGNAL,    /* gw_rules_reloader_request (SIGHUP): always reads whole */
};

struct gw_rules_reloader {
    struct gw_rules_holder *holder; /* borrowed */
    const struct gw_config *cfg;    /* borrowed: the file's defaults */
    char *path;                     /* RATE_LIMIT_RULES_FILE as configured */
    char *dir;                      /* its directory ("." without a slash) */
    char *base;                     /* its last component */
    enum gw_rules_format fmt;       /* YAML for .yaml/.yml, else JSON (as the loader) */
    int wake_fd;                    /* eventfd: a request or stop */
    int ino_fd;                     /* inotify, -1 when unavailable */
    int wd;                         /* watch on dir, -1 when none (retried every poll) */
    pthread_t thread;
    _Atomic bool stop;
    _Atomic bool requested;  /* a SIGHUP is waiting */
    _Atomic uint64_t checks; /* see gw_rules_reloader_counts */
    _Atomic uint64_t attempts;
    /* reloader thread only */
    struct fingerprint fp;        /* at the last read */
    int read_err;                 /* errno of the last read, 0 when it read */
    bool have_hash;               /* hash holds the last content read */
    unsigned char hash[HASH_LEN]; /* SHA-256 of that content */
};

static const char *trigger_name(enum trigger t)
{
    return t == TRIGGER_SIGNAL ? "SIGHUP" : t == TRIGGER_CHANGE ? "file changed" : "start-up";
}

static bool ends_with_nocase(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcasecmp(s + n - m, suffix) == 0;
}

static void fingerprint_of(struct fingerprint *fp, const struct stat *st)
{
    *fp = (struct fingerprint){.dev = st->st_dev,
                               .ino = st->st_ino,
                               .size = st->st_size,
                               .mtime = st->st_mtim,
                               .ctime = st->st_ctim};
}

static bool fingerprint_eq(const struct fingerprint *a, const struct fingerprint *b)
{
    if (a->err != 0 || b->err != 0)
        return a->err == b->err;
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec &&
           a->ctime.tv_sec == b->ctime.tv_sec && a->ctime.tv_nsec == b->ctime.tv_nsec;
}

/* True when the file was modified less than RACY_MS ago. Without inotify,
 * a same-size rewrite within the file system's timestamp granularity of
 * the last read leaves the fingerprint as it was (git's "racily clean"
 * entries): such a file is re-read (and hashed) at each poll until its
 * mtime is old enough to be trusted. */
/* How long ago (ms) the file was modified, per fp; INT64_MIN when fp
 * holds no stat. Negative for an mtime in the future. */
static int64_t mtime_age_ms(const struct fingerprint *fp)
{
    struct timespec now;
    if (fp->err != 0 || clock_gettime(CLOCK_REALTIME, &now) != 0)
        return INT64_MIN;
    return ((int64_t)now.tv_sec - (int64_t)fp->mtime.tv_sec) * 1000 +
           ((int64_t)now.tv_nsec - (int64_t)fp->mtime.tv_nsec) / 1000000;
}

static bool recently_modified(const struct fingerprint *fp)
{
    int64_t age_ms = mtime_age_ms(fp);
    return age_ms < RACY_MS && age_ms > -RACY_MS;
}

static void stat_path(const char *path, struct fingerprint *fp)
{
    struct stat st;
    if (stat(path, &st) != 0)
        *fp = (struct fingerprint){.err = errno};
    else
        fingerprint_of(fp, &st);
}

/* Reads the whole file at path into *buf (malloc'd, caller frees) and its
 * state into *fp. Returns 0, or the errno of the failure (EISDIR for a
 * directory, EFBIG past GW_RULES_FILE_MAX). */
static int read_file(const char *path, char **buf, size_t *len, struct fingerprint *fp)
{
    *buf = NULL;
    *len = 0;
    /* O_NONBLOCK: a FIFO put there by mistake must not hang the thread. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        *fp = (struct fingerprint){.err = errno};
        return errno;
    }
    struct stat st;
    int err = 0;
    if (fstat(fd, &st) != 0) {
        err = errno;
        *fp = (struct fingerprint){.err = err};
    } else {
        fingerprint_of(fp, &st);
        if (S_ISDIR(st.st_mode))
            err = EISDIR;
    }
    char *b = err ? NULL : malloc(GW_RULES_FILE_MAX + 1);
    if (!err && !b)
        err = ENOMEM;
    size_t n = 0;
    while (!err && n <= GW_RULES_FILE_MAX) {
        ssize_t r = read(fd, b + n, GW_RULES_FILE_MAX + 1 - n);
        if (r == 0)
            break;
        if (r < 0) {
            if (errno == EINTR)
                continue;
            err = errno == EAGAIN ? EIO : errno;
            break;
        }
        n += (size_t)r;
    }
    /* A writer still at work (truncated, half written): the size or the
     * times moved while we read. EBUSY: read again once it rests. */
    struct fingerprint after;
    if (!err && fstat(fd, &st) == 0) {
        fingerprint_of(&after, &st);
        if (!fingerprint_eq(&after, fp))
            err = EBUSY;
    }
    close(fd);
    if (!err && n > GW_RULES_FILE_MAX)
        err = EFBIG;
    if (err) {
        free(b);
        return err;
    }
    *buf = b;
    *len = n;
    return 0;
}

/* Logs a failed reload (every line of errs, at most MAX_LOGGED_LINES) and
 * counts it, the first line as the holder's last error. */
static void reload_failed(struct gw_rules_reloader *rl, enum trigger why, char *errs, int nerrors)
{
    char *first = NULL;
    int logged = 0, lines = 0;
    for (char *save = NULL, *line = strtok_r(errs, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        if (first == NULL)
            first = line;
        lines++;
        if (logged < MAX_LOGGED_LINES) {
            gw_error("rules reload failed: %s", line);
            logged++;
        }
    }
    if (lines > logged)
        gw_error("rules reload failed: ... and %d more error lines", lines - logged);
    gw_rules_holder_count_reload(rl->holder, false, first ? first : "unknown error");
    atomic_fetch_add_explicit(&rl->attempts, 1, memory_order_relaxed);
    struct gw_rules *cur = gw_rules_holder_get(rl->holder);
    gw_error("rules reload failed (%s): %d error%s in %s; keeping rules version %s (%zu limits)",
             trigger_name(why), nerrors, nerrors == 1 ? "" : "s", rl->path, cur->version,
             cur->limit_count);
    gw_rules_put(cur);
}

/* True when the file was modified less than GW_RULES_RELOAD_SETTLE_MS ago
 * (or in the future): a writer may not be done with it. */
static bool still_settling(const struct fingerprint *fp)
{
    int64_t age_ms = mtime_age_ms(fp);
    return age_ms < GW_RULES_RELOAD_SETTLE_MS && age_ms > -RACY_MS;
}

/* Re-reads the file and acts on it (the outcomes of gw/rules_reload.h).
 * Returns true, having done nothing else, when the file is being written
 * (changed while read, or modified within the settle time) and patient
 * is set: the caller reads again later. */
static bool reload(struct gw_rules_reloader *rl, enum trigger why, bool patient)
{
    char *buf = NULL, *errs = NULL;
    size_t len = 0, errs_len = 0;
    struct fingerprint fp;
    int err = read_file(rl->path, &buf, &len, &fp);
    if (patient && (err == EBUSY || (err == 0 && still_settling(&fp)))) {
        free(buf);
        return true;
    }
    atomic_fetch_add_explicit(&rl->checks, 1, memory_order_relaxed);
    rl->fp = fp;
    if (err == EBUSY)
        err = EAGAIN; /* still moving after every retry: reported as such */
    if (err != 0) {
        /* The same unreadable state seen again by the watch is not news. */
        if (why == TRIGGER_CHANGE && rl->read_err == err)
            return false;
        rl->read_err = err;
        rl->have_hash = false;
        char line[4200];
        snprintf(line, sizeof(line), "%s: %s", rl->path,
                 err == EFBIG ? "larger than 4 MiB" : strerror(err));
        reload_failed(rl, why, line, 1);
        return false;
    }
    rl->read_err = 0;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    bool hashed = EVP_Digest(buf, len, md, &md_len, EVP_sha256(), NULL) == 1 && md_len == HASH_LEN;
    if (why == TRIGGER_CHANGE && hashed && rl->have_hash && memcmp(md, rl->hash, HASH_LEN) == 0) {
        free(buf);
        return false; /* touched, not changed */
    }
    rl->have_hash = hashed;
    if (hashed)
        memcpy(rl->hash, md, HASH_LEN);

    char prefix[4200];
    snprintf(prefix, sizeof(prefix), "%s: ", rl->path);
    FILE *ef = open_memstream(&errs, &errs_len);
    struct gw_rules *fresh = NULL;
    int rc = ef ? gw_rules_parse(buf, len, rl->fmt, rl->cfg, &fresh, ef, prefix) : -ENOMEM;
    if (ef)
        fclose(ef);
    free(buf);
    if (rc != 0) {
        if (rc == -ENOMEM) {
            free(errs);
            errs = NULL;
        }
        char oom[64] = "out of memory";
        reload_failed(rl, why, errs ? errs : oom, rc < 0 ? 1 : rc);
        free(errs);
        return false;
    }
    free(errs);

    struct gw_rules *cur = gw_rules_holder_get(rl->holder);
    bool same = strcmp(cur->version, fresh->version) == 0;
    if (same && why == TRIGGER_START) {
        /* What main loaded: nothing happened. */
        gw_rules_put(fresh);
        gw_rules_put(cur);
        return false;
    }
    /* Counted before the line is logged: whoever sees the line sees the
     * count (the tests read /metrics after waiting for it). */
    gw_rules_holder_count_reload(rl->holder, true, NULL);
    atomic_fetch_add_explicit(&rl->attempts, 1, memory_order_relaxed);
    if (same) {
        gw_info("rules reloaded: version %s unchanged (%zu limits; %s)", fresh->version,
                fresh->limit_count, trigger_name(why));
        gw_rules_put(fresh);
    } else {
        gw_rules_holder_publish(rl->holder, fresh);
        gw_info("rules reloaded: version %s (%zu limits), was %s (%s)", fresh->version,
                fresh->limit_count, cur->version, trigger_name(why));
    }
    gw_rules_put(cur);
    return false;
}

/* Reads every queued inotify event; true when one may concern the file. */
static bool drain_events(struct gw_rules_reloader *rl)
{
    bool relevant = false;
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        ssize_t n = read(rl->ino_fd, buf, sizeof(buf));
        if (n <= 0) {
            if (n < 0 && errno == EINTR)
                continue;
            break; /* EAGAIN: drained */
        }
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            p += sizeof(*ev) + ev->len;
            if (ev->mask & IN_Q_OVERFLOW) {
                relevant = true; /* events lost: look anyway */
                continue;
            }
            if (ev->wd != rl->wd)
                continue;
            if (ev->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF)) {
                /* The directory went away: the stat poll re-adds the watch. */
                if (ev->mask & IN_IGNORED)
                    rl->wd = -1;
                relevant = true;
                continue;
            }
            /* The file itself, or the ConfigMap's "..data"/"..<timestamp>"
             * entries; other names in the directory are someone else's. */
            if (ev->len > 0 && (strcmp(ev->name, rl->base) == 0 || strncmp(ev->name, "..", 2) == 0))
                relevant = true;
        }
    }
    return relevant;
}

static int add_watch(struct gw_rules_reloader *rl)
{
    rl->wd = inotify_add_watch(rl->ino_fd, rl->dir, WATCH_MASK);
    return rl->wd < 0 ? -errno : 0;
}

static void *reloader_main(void *arg)
{
    struct gw_rules_reloader *rl = arg;
    uint64_t next_poll = gw_now_ms() + GW_RULES_RELOAD_POLL_MS;
    bool pending = false;   /* a read is due at settle_at */
    bool signalled = false; /* that read answers a request (SIGHUP) */
    bool busy = false;      /* the file was being written at the last try */
    uint64_t settle_at = 0, first_event = 0, busy_since = 0;
    while (!atomic_load_explicit(&rl->stop, memory_order_acquire)) {
        uint64_t now = gw_now_ms();
        uint64_t due = pending && settle_at < next_poll ? settle_at : next_poll;
        int timeout = due > now ? (int)(due - now) : 0;
        struct pollfd fds[2] = {{.fd = rl->wake_fd, .events = POLLIN},
                                {.fd = rl->ino_fd, .events = POLLIN}};
        int ready = poll(fds, 2, timeout);
        if (ready > 0 && (fds[0].revents & POLLIN)) {
            uint64_t v;
            if (read(rl->wake_fd, &v, sizeof(v)) < 0) { /* EAGAIN: already drained */
            }
        }
        if (atomic_load_explicit(&rl->stop, memory_order_acquire))
            break;
        now = gw_now_ms();
        if (atomic_exchange_explicit(&rl->requested, false, memory_order_acq_rel)) {
            /* A request (SIGHUP) reads now, whatever was pending. */
            signalled = true;
            pending = true;
            first_event = now;
            settle_at = now;
        }
        if (ready > 0 && (fds[1].revents & POLLIN) && drain_events(rl) && !signalled) {
            /* Wait for the writer to finish (a burst of events), but not
             * for ever. */
            if (!pending) {
                pending = true;
                first_event = now;
            }
            settle_at = now + GW_RULES_RELOAD_SETTLE_MS;
            if (settle_at > first_event + GW_RULES_RELOAD_SETTLE_MAX_MS)
                settle_at = first_event + GW_RULES_RELOAD_SETTLE_MAX_MS;
        }
        if (pending && now >= settle_at) {
            if (!busy)
                busy_since = now;
            bool patient = now - busy_since < BUSY_MAX_MS;
            if (reload(rl, signalled ? TRIGGER_SIGNAL : TRIGGER_CHANGE, patient)) {
                /* Being written: read again once it rests (for at most
                 * BUSY_MAX_MS, then whatever is there). */
                busy = true;
                first_event = now;
                settle_at = now + GW_RULES_RELOAD_SETTLE_MS;
            } else {
                busy = false;
                pending = false;
                signalled = false;
            }
        }
        if (now >= next_poll) {
            next_poll = now + GW_RULES_RELOAD_POLL_MS;
            bool rewatched = rl->ino_fd >= 0 && rl->wd < 0 && add_watch(rl) == 0;
            struct fingerprint fp;
            stat_path(rl->path, &fp);
            bool look = rewatched || !fingerprint_eq(&fp, &rl->fp) ||
                        (rl->wd < 0 && recently_modified(&fp));
            if (look && !pending) {
                pending = true;
                first_event = now;
                settle_at = now + GW_RULES_RELOAD_SETTLE_MS;
            }
        }
    }
    return NULL;
}

int gw_rules_reloader_start(struct gw_rules_reloader **out, struct gw_rules_holder *h,
                            const struct gw_config *cfg, unsigned flags)
{
    *out = NULL;
    struct gw_rules_reloader *rl = calloc(1, sizeof(*rl));
    if (rl == NULL)
        return -ENOMEM;
    int rc = -ENOMEM;
    rl->holder = h;
    rl->cfg = cfg;
    rl->wake_fd = -1;
    rl->ino_fd = -1;
    rl->wd = -1;
    rl->path = strdup(cfg->rate_limit_rules_file);
    if (rl->path == NULL)
        goto fail;
    const char *slash = strrchr(rl->path, '/');
    rl->dir = slash == NULL ? strdup(".")
                            : strndup(rl->path, slash == rl->path ? 1 : (size_t)(slash - rl->path));
    rl->base = strdup(slash == NULL ? rl->path : slash + 1);
    if (rl->dir == NULL || rl->base == NULL)
        goto fail;
    rl->fmt = ends_with_nocase(rl->path, ".yaml") || ends_with_nocase(rl->path, ".yml")
                  ? GW_RULES_YAML
                  : GW_RULES_JSON;
    rl->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (rl->wake_fd < 0) {
        rc = -errno;
        goto fail;
    }
    char how[512];
    if (flags & GW_RULES_RELOAD_NO_INOTIFY) {
        snprintf(how, sizeof(how), "a stat every %d ms; inotify not used", GW_RULES_RELOAD_POLL_MS);
    } else if ((rl->ino_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) < 0) {
        snprintf(how, sizeof(how), "a stat every %d ms; inotify unavailable: %s",
                 GW_RULES_RELOAD_POLL_MS, strerror(errno));
        gw_warn("RATE_LIMIT_RULES_FILE %s: inotify unavailable (%s): changes are seen by a stat "
                "every %d ms",
                rl->path, strerror(errno), GW_RULES_RELOAD_POLL_MS);
    } else if ((rc = add_watch(rl)) != 0) {
        snprintf(how, sizeof(how), "a stat every %d ms; inotify on %s failed: %s",
                 GW_RULES_RELOAD_POLL_MS, rl->dir, strerror(-rc));
        gw_warn("RATE_LIMIT_RULES_FILE %s: cannot watch %s (%s): changes are seen by a stat every "
                "%d ms",
                rl->path, rl->dir, strerror(-rc), GW_RULES_RELOAD_POLL_MS);
    } else {
        snprintf(how, sizeof(how), "inotify on %s and a stat every %d ms", rl->dir,
                 GW_RULES_RELOAD_POLL_MS);
    }
    (void)reload(rl, TRIGGER_START, false);
    rc = -pthread_create(&rl->thread, NULL, reloader_main, rl);
    if (rc != 0)
        goto fail;
    gw_info("watching RATE_LIMIT_RULES_FILE %s (%s)", rl->path, how);
    *out = rl;
    return 0;
fail:
    if (rl->ino_fd >= 0)
        close(rl->ino_fd);
    if (rl->wake_fd >= 0)
        close(rl->wake_fd);
    free(rl->base);
    free(rl->dir);
    free(rl->path);
    free(rl);
    return rc;
}

void gw_rules_reloader_request(struct gw_rules_reloader *rl)
{
    atomic_store_explicit(&rl->requested, true, memory_order_release);
    uint64_t one = 1;
    if (write(rl->wake_fd, &one, sizeof(one)) < 0) { /* EAGAIN: a wake is already pending */
    }
}

void gw_rules_reloader_counts(const struct gw_rules_reloader *rl, uint64_t *checks,
                              uint64_t *attempts)
{
    struct gw_rules_reloader *m = (struct gw_rules_reloader *)rl; /* loads only */
    if (checks)
        *checks = atomic_load_explicit(&m->checks, memory_order_relaxed);
    if (attempts)
        *attempts = atomic_load_explicit(&m->attempts, memory_order_relaxed);
}

void gw_rules_reloader_stop(struct gw_rules_reloader *rl)
{
    if (rl == NULL)
        return;
    atomic_store_explicit(&rl->stop, true, memory_order_release);
    uint64_t one = 1;
    if (write(rl->wake_fd, &one, sizeof(one)) < 0) { /* EAGAIN: a wake is already pending */
    }
    pthread_join(rl->thread, NULL);
    if (rl->ino_fd >= 0)
        close(rl->ino_fd);
    close(rl->wake_fd);
    free(rl->base);
    free(rl->dir);
    free(rl->path);
    free(rl);
}
