/* Prints "ready <pid>", waits for a line, dlopen()s argv[1], prints "loaded", waits for
 * another line, runs one request inside the library, prints "done". The main program has
 * probes of its own (a "startup" task) so that tprof can attach before the library exists. */
#define TPROF_DEFINE_SEMAPHORES
#include "tprof.h"

#include <dlfcn.h>
#include <stdio.h>
#include <unistd.h>

typedef void (*request_fn)(unsigned long long, unsigned long long, unsigned long long, int);

int main(int argc, char **argv)
{
    char line[64];
    if (argc < 2)
        return 2;
    printf("ready %ld\n", (long)getpid());
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin))
        return 3;
    TPROF_TASK_BEGIN(1, 2, 3, 0, "startup", 7);
    TPROF_TASK_END(1, 2, 3);
    void *lib = dlopen(argv[1], RTLD_NOW);
    if (!lib) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 4;
    }
    request_fn f = (request_fn)dlsym(lib, "lib_request");
    if (!f)
        return 5;
    printf("loaded\n");
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin))
        return 6;
    f(0x1111, 0x2222, 0x3333, 7);
    printf("done\n");
    fflush(stdout);
    return 0;
}
