/* hostile.c - a traced process that passes tprof hostile probe arguments, for the fault
 * suite (tests/tests/faults.rs): NULL, invalid and kernel pointers, huge lengths, names with
 * terminal escape sequences, newlines, C1 controls and invalid UTF-8, as task names, region
 * names, log keys and values, and as its own thread name (comm).
 *
 * Prints `ready <pid>`, waits for a line on stdin, fires one task per case (each task's
 * span-id is its case number + 1, trace-id 1:1, so the test can find them), prints `done`,
 * waits for another line (tprof drains while the process lives), then fires a last task
 * (span-id 100) with an invalid name pointer and exits at once: tprof decodes that one after
 * the process is gone.
 */
#define _GNU_SOURCE

#define TPROF_DEFINE_SEMAPHORES
#include "tprof.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

static void sleep_us(long us)
{
    struct timespec ts = { 0, us * 1000L };
    nanosleep(&ts, NULL);
}

/* 200 'A's: a long readable name, for the huge-length cases. */
static char long_name[200];

struct name_case {
    const char *ptr;
    uint64_t len;
};

int main(void)
{
    memset(long_name, 'A', sizeof long_name);
    /* A page that exists but can never be read. */
    char *noaccess = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (noaccess == MAP_FAILED)
        return 1;
    /* A readable page of 'B's followed by an unreadable one. */
    char *two = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (two == MAP_FAILED || mprotect(two + 4096, 4096, PROT_NONE) != 0)
        return 1;
    memset(two, 'B', 4096);
    static const char esc[] = "\x1b[31mred\x1b[0m";
    static const char nl[] = "line1\nline2\r\x07";
    static const char bad[] = "bad\xff\xfeutf8\xc3";
    static const char c1[] = "c1\xc2\x9b" "2Jx";        /* U+009B: the 8-bit CSI */
    static const char clear[] = "\x1b]0;owned\x07\x1b[2J"; /* set the terminal title, clear */
    struct name_case cases[] = {
        { NULL, 5 },                                  /* 0: NULL pointer */
        { (const char *)1, 10 },                      /* 1: invalid pointer */
        { (const char *)0xffffffff81000000ull, 16 },  /* 2: kernel address */
        { noaccess, 8 },                              /* 3: PROT_NONE page */
        { long_name, 1ull << 40 },                    /* 4: huge length */
        { long_name, UINT64_MAX },                    /* 5: u64::MAX length */
        { esc, sizeof esc - 1 },                      /* 6: ESC sequences */
        { nl, sizeof nl - 1 },                        /* 7: newline, CR, BEL */
        { bad, sizeof bad - 1 },                      /* 8: invalid UTF-8 */
        { c1, sizeof c1 - 1 },                        /* 9: C1 control */
        { clear, sizeof clear - 1 },                  /* 10: OSC title + clear screen */
        { two + 4096 - 3, 8 },                        /* 11: 3 readable bytes, then PROT_NONE */
    };
    /* The process's own name carries an escape sequence too: tprof prints comms. */
    prctl(PR_SET_NAME, "\x1b[31mevil", 0, 0, 0);

    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin))
        return 1;

    size_t n = sizeof cases / sizeof cases[0];
    for (size_t i = 0; i < n; i++) {
        uint64_t span = i + 1;
        TPROF_TASK_BEGIN(1, 1, span, 0, cases[i].ptr, cases[i].len);
        /* The same argument as a region name, a log key and a log value. */
        TPROF_REGION_BEGIN(cases[i].ptr, cases[i].len);
        TPROF_LOG(cases[i].ptr, cases[i].len, "v", 1);
        TPROF_LOG("k", 1, cases[i].ptr, cases[i].len);
        sleep_us(200);
        TPROF_REGION_END(cases[i].ptr, cases[i].len);
        TPROF_TASK_END(1, 1, span);
    }
    printf("done\n");
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin))
        return 1;
    TPROF_TASK_BEGIN(1, 1, 100, 0, (const char *)1, 10);
    TPROF_TASK_END(1, 1, 100);
    _exit(0);
}
