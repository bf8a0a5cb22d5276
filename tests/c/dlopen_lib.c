/* A shared library with tprof probes, loaded with dlopen() after tprof attached. */
#define TPROF_DEFINE_SEMAPHORES
#include "tprof.h"

#include <time.h>

void lib_request(unsigned long long trace_hi, unsigned long long trace_lo, unsigned long long span, int ms)
{
    TPROF_TASK_BEGIN(trace_hi, trace_lo, span, 0, "lib-request", 11);
    struct timespec ts = { 0, (long)ms * 1000000L };
    nanosleep(&ts, NULL);
    TPROF_TASK_END(trace_hi, trace_lo, span);
}
