/* Per-call cost of a plain <sys/sdt.h> probe, the C reference for `cargo xtask bench probes`.
 *
 * probe_bench <empty|sdt2|sdt6> <iterations> [reps]: same protocol as the Rust probe-bench:
 * pins itself to CPU 0, prints `ready <pid>`, waits for a line on stdin, runs a warm-up and
 * `reps` (default 5) timed loops, prints `ns_per_iter <r1> ... <rN>` and exits.
 *
 * Loop bodies: `empty` is the counter passed through black_box (the same inline asm Rust's
 * std::hint::black_box emits: the value's address into an empty asm with a memory clobber);
 * `sdt2`/`sdt6` add one unguarded STAP_PROBE2/STAP_PROBE6 site (provider `cbench`) with
 * constant arguments, like region_begin (2 arguments) and task_begin (6) in Rust.
 *
 * Built by xtask with `gcc -O2`.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/sdt.h>

static inline void black_box(uint64_t v) {
    uint64_t x = v;
    __asm__ volatile("" : : "r"(&x) : "memory");
}

static const char NAME[] = "bench";

__attribute__((noinline)) static void loop_empty(uint64_t n) {
    for (uint64_t i = 0; i < n; i++) {
        black_box(i);
    }
}

__attribute__((noinline)) static void loop_sdt2(uint64_t n) {
    for (uint64_t i = 0; i < n; i++) {
        black_box(i);
        STAP_PROBE2(cbench, sdt2, NAME, (uint64_t)5);
    }
}

__attribute__((noinline)) static void loop_sdt6(uint64_t n) {
    for (uint64_t i = 0; i < n; i++) {
        black_box(i);
        STAP_PROBE6(cbench, sdt6, (uint64_t)0x0123456789abcdefULL, (uint64_t)0xfedcba9876543210ULL,
                    (uint64_t)0x1111222233334444ULL, (uint64_t)0x5555666677778888ULL, NAME, (uint64_t)5);
    }
}

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void usage(void) {
    fprintf(stderr, "usage: probe_bench <empty|sdt2|sdt6> <iterations> [reps]\n");
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 3) usage();
    void (*body)(uint64_t);
    if (strcmp(argv[1], "empty") == 0) body = loop_empty;
    else if (strcmp(argv[1], "sdt2") == 0) body = loop_sdt2;
    else if (strcmp(argv[1], "sdt6") == 0) body = loop_sdt6;
    else usage();
    char *end = NULL;
    uint64_t iters = strtoull(argv[2], &end, 10);
    if (!end || *end || iters == 0) usage();
    int reps = 5;
    if (argc > 3) {
        reps = atoi(argv[3]);
        if (reps <= 0 || reps > 1000) usage();
    }
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(0, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
        perror("probe_bench: cannot pin to CPU 0");
        return 1;
    }
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin)) {
        fprintf(stderr, "probe_bench: stdin closed before the go line\n");
        return 1;
    }
    body(iters / 10 ? iters / 10 : 1);
    double *samples = calloc((size_t)reps, sizeof *samples);
    if (!samples) return 1;
    for (int r = 0; r < reps; r++) {
        double t = now_ns();
        body(iters);
        samples[r] = (now_ns() - t) / (double)iters;
    }
    printf("ns_per_iter");
    for (int r = 0; r < reps; r++) printf(" %.6f", samples[r]);
    printf("\n");
    fflush(stdout);
    free(samples);
    return 0;
}
