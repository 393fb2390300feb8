/*
 * A test-only LD_PRELOAD library that gives a process (redis-server) a wall
 * clock the test sets to the microsecond. libfaketime cannot be used on
 * Debian's redis-server: its start-up calls clock_gettime() re-entrantly
 * through jemalloc and fails (libfaketime issues #130, #327). This shim
 * never allocates and never calls dlsym: the wall clock is read from a
 * shared 8-byte file, every other clock goes straight to the system call.
 *
 * GWT_FAKECLOCK_FILE names a file whose first 8 bytes are an int64_t, Unix
 * time in µs, in host byte order; the test maps the same file and stores
 * new instants into it (one aligned 8-byte store, so a reader never sees
 * half of one). CLOCK_REALTIME, CLOCK_REALTIME_COARSE, gettimeofday() and
 * time() answer that instant; without the variable (or when the file cannot
 * be mapped) they answer the real clock.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* The interposed symbols; declared here so -Wmissing-prototypes is quiet. */
int clock_gettime(clockid_t clk, struct timespec *ts);
int gettimeofday(struct timeval *restrict tv, void *restrict tz);
time_t time(time_t *out);

static const int64_t *volatile g_clock; /* mapped file; NULL until mapped */
static volatile int g_state;            /* 0 not tried, 1 mapped, 2 not available */

/* The mapped instant, or NULL for the real clock. Racing first callers may
 * both map the file: harmless, one mapping stays unused. */
static const int64_t *fake(void)
{
    if (g_state == 1)
        return g_clock;
    if (g_state == 2)
        return NULL;
    const char *path = getenv("GWT_FAKECLOCK_FILE");
    int fd = path != NULL ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    void *p = fd >= 0 ? mmap(NULL, sizeof(int64_t), PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
    if (fd >= 0)
        close(fd);
    if (p == MAP_FAILED) {
        g_state = 2;
        return NULL;
    }
    g_clock = p;
    __atomic_store_n(&g_state, 1, __ATOMIC_RELEASE);
    return g_clock;
}

static int64_t fake_us(const int64_t *c)
{
    return __atomic_load_n(c, __ATOMIC_ACQUIRE);
}

int clock_gettime(clockid_t clk, struct timespec *ts)
{
    const int64_t *c;
    if ((clk == CLOCK_REALTIME || clk == CLOCK_REALTIME_COARSE) && (c = fake()) != NULL) {
        int64_t us = fake_us(c);
        ts->tv_sec = (time_t)(us / 1000000);
        ts->tv_nsec = (long)(us % 1000000) * 1000;
        return 0;
    }
    return (int)syscall(SYS_clock_gettime, clk, ts);
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz)
{
    (void)tz;
    struct timespec ts;
    int rc = clock_gettime(CLOCK_REALTIME, &ts);
    if (rc != 0)
        return rc;
    tv->tv_sec = ts.tv_sec; /* glibc declares tv non-null */
    tv->tv_usec = (suseconds_t)(ts.tv_nsec / 1000);
    return 0;
}

time_t time(time_t *out)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return (time_t)-1;
    if (out != NULL)
        *out = ts.tv_sec;
    return ts.tv_sec;
}
