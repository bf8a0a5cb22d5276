/* tprof.h - emit the tprof USDT probes (tprof probe ABI v1) from C or C++.
 *
 * The probes are those of the Rust crate `usdt-probes`; their arguments and semantics are
 * specified in `usdt-probes/ABI.md`. Each TPROF_* probe macro below expands to one SystemTap
 * SDT v3 probe site from <sys/sdt.h> (Debian/Ubuntu: `apt install systemtap-sdt-dev`): a
 * one-byte `nop` in the code plus a `.note.stapsdt` entry naming provider `tprof`, the probe,
 * its semaphore and where each argument lives. Nobody attached, the `nop` (and computing the
 * arguments) is the whole cost.
 *
 * Semaphores. Every probe has a semaphore, `unsigned short tprof_<probe>_semaphore`, in the
 * `.probes` section; tprof arms them when it attaches and the kernel disarms them when it
 * detaches or exits. Exactly ONE translation unit of each linked module (the executable, or
 * each shared library that uses this header) must define them:
 *
 *     #define TPROF_DEFINE_SEMAPHORES
 *     #include "tprof.h"
 *
 * Every other translation unit includes "tprof.h" plainly and gets `extern` declarations.
 * The semaphores have hidden visibility, so two libraries that both use this header each
 * keep their own.
 *
 * The probe sites themselves are NOT guarded by the semaphores: they fire whenever a tracer
 * is attached, armed or not. Use TPROF_ENABLED() / TPROF_LOG_ENABLED() only to skip costly
 * work done to compute arguments (formatting a log value, say):
 *
 *     if (TPROF_LOG_ENABLED()) {
 *         char buf[32];
 *         int n = snprintf(buf, sizeof buf, "%d", rows);
 *         TPROF_LOG("rows", 4, buf, (size_t)n);
 *     }
 *
 * Arguments: ids are integers (converted to uint64_t); names, keys and values are a pointer
 * and a length in bytes (UTF-8, need not be NUL-terminated). Each argument is evaluated once,
 * whether or not a tracer is attached. Any expression will do, globals included: the macros
 * keep gcc from describing an argument by a symbol (`8@g_span(%rip)`), which tprof could not
 * decode (see TPROF_PIN_ below).
 *
 * Include this header before any other inclusion of <sys/sdt.h> in the same translation unit
 * (it must define _SDT_HAS_SEMAPHORES first); otherwise it stops with an #error.
 *
 * C99 or later, or C++. x86_64 Linux is what tprof traces; the header itself is portable to
 * wherever <sys/sdt.h> is.
 */
#ifndef TPROF_H
#define TPROF_H 1

/* tprof probe ABI implemented by this header. */
#define TPROF_ABI_VERSION 1

#if defined(_SYS_SDT_H) && !defined(_SDT_HAS_SEMAPHORES)
#error "tprof.h: <sys/sdt.h> was included before tprof.h without _SDT_HAS_SEMAPHORES; include tprof.h first"
#endif

#ifndef _SDT_HAS_SEMAPHORES
#define _SDT_HAS_SEMAPHORES 1
#endif

#include <stddef.h>
#include <stdint.h>
#include <sys/sdt.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifdef TPROF_DEFINE_SEMAPHORES
#define TPROF_SEMAPHORE_(name)                                                                   \
    __extension__ unsigned short name __attribute__((used, section(".probes"),              \
                                                      visibility("hidden"))) = 0
#else
#define TPROF_SEMAPHORE_(name)                                                                   \
    __extension__ extern unsigned short name __attribute__((section(".probes"),             \
                                                             visibility("hidden")))
#endif

TPROF_SEMAPHORE_(tprof_task_begin_semaphore);
TPROF_SEMAPHORE_(tprof_task_end_semaphore);
TPROF_SEMAPHORE_(tprof_task_attach_semaphore);
TPROF_SEMAPHORE_(tprof_task_detach_semaphore);
TPROF_SEMAPHORE_(tprof_region_begin_semaphore);
TPROF_SEMAPHORE_(tprof_region_end_semaphore);
TPROF_SEMAPHORE_(tprof_log_semaphore);

#undef TPROF_SEMAPHORE_

#ifdef __cplusplus
}
#endif

/* Reads a semaphore once; the kernel changes it behind the compiler's back. */
#define TPROF_SEMAPHORE_ARMED_(sem) \
    __builtin_expect(*(volatile unsigned short *)&(sem) != 0, 0)

/* Non-zero when a tracer has armed the tprof probes (tprof arms all of them on attach). */
#define TPROF_ENABLED() TPROF_SEMAPHORE_ARMED_(tprof_task_begin_semaphore)
/* Non-zero when a tracer armed the `log` probe: guard costly log values with it. */
#define TPROF_LOG_ENABLED() TPROF_SEMAPHORE_ARMED_(tprof_log_semaphore)

/* Every argument is passed as a 64-bit unsigned integer, so each note spec says `8@...`.
 *
 * Each argument is first copied into a local and, unless the compiler knows it is a constant,
 * pinned to a register by an empty asm. Without that, gcc at -O1 and above describes a value
 * loaded from a global or static variable by the variable's own memory, `8@g_span(%rip)`: a
 * symbolic operand that tprof cannot decode. With it the specs are registers
 * (`8@%rax`), constants (`8@$2`) or, at -O0, frame slots (`8@-40(%rbp)`), all of which tprof
 * decodes. The asm emits no instruction; it only stops the compiler folding the load into
 * the operand. */
#define TPROF_U64_(x) ((uint64_t)(x))
#define TPROF_PTR_(p) ((uint64_t)(uintptr_t)(const void *)(p))
#define TPROF_PIN_(v)                                                                             \
    do {                                                                                         \
        if (!__builtin_constant_p(v))                                                            \
            __asm__("" : "+r"(v));                                                               \
    } while (0)

/* tprof:task_begin(trace_hi, trace_lo, span_id, parent_span_id, name_ptr, name_len):
 * the thread starts work for a new task (request). span_id must be non-zero; parent_span_id
 * 0 means no parent. */
#define TPROF_TASK_BEGIN(trace_hi, trace_lo, span_id, parent_span_id, name, name_len)           \
    do {                                                                                         \
        uint64_t tprof_a1_ = TPROF_U64_(trace_hi), tprof_a2_ = TPROF_U64_(trace_lo);            \
        uint64_t tprof_a3_ = TPROF_U64_(span_id), tprof_a4_ = TPROF_U64_(parent_span_id);       \
        uint64_t tprof_a5_ = TPROF_PTR_(name), tprof_a6_ = TPROF_U64_(name_len);                \
        TPROF_PIN_(tprof_a1_);                                                                   \
        TPROF_PIN_(tprof_a2_);                                                                   \
        TPROF_PIN_(tprof_a3_);                                                                   \
        TPROF_PIN_(tprof_a4_);                                                                   \
        TPROF_PIN_(tprof_a5_);                                                                   \
        TPROF_PIN_(tprof_a6_);                                                                   \
        STAP_PROBE6(tprof, task_begin, tprof_a1_, tprof_a2_, tprof_a3_, tprof_a4_, tprof_a5_,   \
                    tprof_a6_);                                                                  \
    } while (0)

/* tprof:task_end(trace_hi, trace_lo, span_id): the task is over. */
#define TPROF_TASK_END(trace_hi, trace_lo, span_id)                                             \
    do {                                                                                         \
        uint64_t tprof_a1_ = TPROF_U64_(trace_hi), tprof_a2_ = TPROF_U64_(trace_lo);            \
        uint64_t tprof_a3_ = TPROF_U64_(span_id);                                                \
        TPROF_PIN_(tprof_a1_);                                                                   \
        TPROF_PIN_(tprof_a2_);                                                                   \
        TPROF_PIN_(tprof_a3_);                                                                   \
        STAP_PROBE3(tprof, task_end, tprof_a1_, tprof_a2_, tprof_a3_);                           \
    } while (0)

/* tprof:task_attach(trace_hi, trace_lo, span_id, parent_span_id): this thread resumes work
 * for an already begun task (fire before running a slice of its work here). */
#define TPROF_TASK_ATTACH(trace_hi, trace_lo, span_id, parent_span_id)                          \
    do {                                                                                         \
        uint64_t tprof_a1_ = TPROF_U64_(trace_hi), tprof_a2_ = TPROF_U64_(trace_lo);            \
        uint64_t tprof_a3_ = TPROF_U64_(span_id), tprof_a4_ = TPROF_U64_(parent_span_id);       \
        TPROF_PIN_(tprof_a1_);                                                                   \
        TPROF_PIN_(tprof_a2_);                                                                   \
        TPROF_PIN_(tprof_a3_);                                                                   \
        TPROF_PIN_(tprof_a4_);                                                                   \
        STAP_PROBE4(tprof, task_attach, tprof_a1_, tprof_a2_, tprof_a3_, tprof_a4_);             \
    } while (0)

/* tprof:task_detach(trace_hi, trace_lo, span_id): this thread stops working for the task
 * for now (fire after running that slice). */
#define TPROF_TASK_DETACH(trace_hi, trace_lo, span_id)                                          \
    do {                                                                                         \
        uint64_t tprof_a1_ = TPROF_U64_(trace_hi), tprof_a2_ = TPROF_U64_(trace_lo);            \
        uint64_t tprof_a3_ = TPROF_U64_(span_id);                                                \
        TPROF_PIN_(tprof_a1_);                                                                   \
        TPROF_PIN_(tprof_a2_);                                                                   \
        TPROF_PIN_(tprof_a3_);                                                                   \
        STAP_PROBE3(tprof, task_detach, tprof_a1_, tprof_a2_, tprof_a3_);                        \
    } while (0)

/* tprof:region_begin(name_ptr, name_len): a phase of the thread's current task begins. */
#define TPROF_REGION_BEGIN(name, name_len)                                                      \
    do {                                                                                         \
        uint64_t tprof_a1_ = TPROF_PTR_(name), tprof_a2_ = TPROF_U64_(name_len);                \
        TPROF_PIN_(tprof_a1_);                                                                   \
        TPROF_PIN_(tprof_a2_);                                                                   \
        STAP_PROBE2(tprof, region_begin, tprof_a1_, tprof_a2_);                                  \
    } while (0)

/* tprof:region_end(name_ptr, name_len): that phase ends (same name as its begin). */
#define TPROF_REGION_END(name, name_len)                                                        \
    do {                                                                                         \
        uint64_t tprof_a1_ = TPROF_PTR_(name), tprof_a2_ = TPROF_U64_(name_len);                \
        TPROF_PIN_(tprof_a1_);                                                                   \
        TPROF_PIN_(tprof_a2_);                                                                   \
        STAP_PROBE2(tprof, region_end, tprof_a1_, tprof_a2_);                                    \
    } while (0)

/* tprof:log(key_ptr, key_len, value_ptr, value_len): key=value for the current task. */
#define TPROF_LOG(key, key_len, value, value_len)                                               \
    do {                                                                                         \
        uint64_t tprof_a1_ = TPROF_PTR_(key), tprof_a2_ = TPROF_U64_(key_len);                  \
        uint64_t tprof_a3_ = TPROF_PTR_(value), tprof_a4_ = TPROF_U64_(value_len);              \
        TPROF_PIN_(tprof_a1_);                                                                   \
        TPROF_PIN_(tprof_a2_);                                                                   \
        TPROF_PIN_(tprof_a3_);                                                                   \
        TPROF_PIN_(tprof_a4_);                                                                   \
        STAP_PROBE4(tprof, log, tprof_a1_, tprof_a2_, tprof_a3_, tprof_a4_);                     \
    } while (0)

/* Splits a 16-byte W3C trace-id (bytes in the order of its 32 hex digits) into the two
 * big-endian halves the probes take: *hi gets the first 16 hex digits, *lo the last 16. */
static inline void tprof_trace_id_split(const uint8_t id[16], uint64_t *hi, uint64_t *lo)
{
    uint64_t h = 0, l = 0;
    int i;
    for (i = 0; i < 8; i++) {
        h = (h << 8) | id[i];
        l = (l << 8) | id[8 + i];
    }
    *hi = h;
    *lo = l;
}

#endif /* TPROF_H */
