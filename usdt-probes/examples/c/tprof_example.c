/* tprof_example.c - a toy "server" marking its requests with the tprof probes.
 *
 * Build (from the repository root; needs <sys/sdt.h>, Debian: systemtap-sdt-dev):
 *
 *     gcc -O2 -g -Wall -Wextra -I usdt-probes/include \
 *         -o /tmp/tprof_example usdt-probes/examples/c/tprof_example.c
 *
 * Run it, attach a tracer, then press Enter:
 *
 *     /tmp/tprof_example                 # prints "ready <pid>" and waits for a newline
 *     sudo tprof attach --pid <pid>      # in another terminal
 *
 * `readelf -n /tmp/tprof_example` or `tprof list --binary /tmp/tprof_example` shows the
 * seven probes. The program handles three fake requests; each is a task with fresh ids, a
 * "db" region that sleeps, and a log.
 */
#define _POSIX_C_SOURCE 200809L

/* This translation unit defines the semaphores (exactly one per executable or library). */
#define TPROF_DEFINE_SEMAPHORES
#include "tprof.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* xorshift64: good enough for fake ids. */
static uint64_t rng_state;

static void rng_seed(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    rng_state = ((uint64_t)ts.tv_sec * 1000000007u) ^ (uint64_t)ts.tv_nsec ^
                ((uint64_t)getpid() << 32);
    if (rng_state == 0)
        rng_state = 0x9e3779b97f4a7c15u;
}

/* A random non-zero 64-bit id (the ABI forbids zero span and trace ids). */
static uint64_t rng_next_nonzero(void)
{
    uint64_t x;
    do {
        x = rng_state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        rng_state = x;
    } while (x == 0);
    return x;
}

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0) {
        /* interrupted: sleep the rest */
    }
}

/* One request: a task with a "db" region and a log. */
static void handle_request(int i)
{
    /* A 16-byte W3C trace-id, as it would come from a traceparent header. */
    uint8_t trace_id[16];
    uint64_t trace_hi, trace_lo;
    uint64_t a = rng_next_nonzero(), b = rng_next_nonzero();
    memcpy(trace_id, &a, 8);
    memcpy(trace_id + 8, &b, 8);
    tprof_trace_id_split(trace_id, &trace_hi, &trace_lo);

    uint64_t span_id = rng_next_nonzero();
    uint64_t parent_span_id = 0; /* a root span */
    const char *name = "GET /users";
    size_t name_len = strlen(name);

    TPROF_TASK_BEGIN(trace_hi, trace_lo, span_id, parent_span_id, name, name_len);

    TPROF_REGION_BEGIN("db", 2);
    sleep_ms(20 + 10 * i);
    TPROF_REGION_END("db", 2);

    /* Format the value only when somebody listens. */
    if (TPROF_LOG_ENABLED()) {
        char value[32];
        int n = snprintf(value, sizeof value, "%d", 12 + i);
        if (n > 0)
            TPROF_LOG("rows", 4, value, (size_t)n);
    }
    /* A log whose value needs no formatting can fire unconditionally. */
    TPROF_LOG("status", 6, "200", 3);

    TPROF_TASK_END(trace_hi, trace_lo, span_id);

    printf("request %d: trace %016llx%016llx span %016llx done\n", i,
           (unsigned long long)trace_hi, (unsigned long long)trace_lo,
           (unsigned long long)span_id);
}

/* The same work on behalf of a task begun elsewhere, the way an executor that moves work
 * between threads brackets each slice of it with attach/detach. */
static void resume_on_this_thread(uint64_t trace_hi, uint64_t trace_lo, uint64_t span_id,
                                  uint64_t parent_span_id)
{
    TPROF_TASK_ATTACH(trace_hi, trace_lo, span_id, parent_span_id);
    sleep_ms(5);
    TPROF_TASK_DETACH(trace_hi, trace_lo, span_id);
}

int main(void)
{
    char line[64];

    rng_seed();
    printf("ready %ld\n", (long)getpid());
    fflush(stdout);
    if (fgets(line, sizeof line, stdin) == NULL) {
        /* stdin closed: start anyway */
    }

    printf("tprof probes %s\n", TPROF_ENABLED() ? "armed" : "not armed");
    for (int i = 0; i < 3; i++)
        handle_request(i);

    /* A task begun here, paused, resumed for one more slice and ended. */
    uint64_t hi = rng_next_nonzero(), lo = rng_next_nonzero(), span = rng_next_nonzero();
    TPROF_TASK_BEGIN(hi, lo, span, 0, "background", 10);
    TPROF_TASK_DETACH(hi, lo, span);
    resume_on_this_thread(hi, lo, span, 0);
    TPROF_TASK_ATTACH(hi, lo, span, 0);
    TPROF_TASK_END(hi, lo, span);
    printf("done\n");
    return 0;
}
