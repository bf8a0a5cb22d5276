/* many_sites.c - a traced process with many tprof probe sites (128 `region_begin` sites,
 * plus one task), for the fault suite (tests/tests/faults.rs): attaching and detaching must
 * stay prompt however many sites a service has.
 *
 * Prints `ready <pid>`, waits for a line, runs one task through every site, prints `done`,
 * waits for another line and exits.
 */
#define TPROF_DEFINE_SEMAPHORES
#include "tprof.h"

#include <stdio.h>
#include <unistd.h>

#define X2(x) x x
#define X4(x) x x x x
/* Each expansion is its own probe site (its own nop and note). */
#define SITE TPROF_REGION_BEGIN("r", 1);

int main(void)
{
    char line[64];
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin))
        return 1;
    TPROF_TASK_BEGIN(1, 1, 1, 0, "many", 4);
    X2(X4(X4(X4(SITE))))
    TPROF_TASK_END(1, 1, 1);
    printf("done\n");
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin))
        return 1;
    return 0;
}
