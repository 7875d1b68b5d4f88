/* Shared declarations of the student's C step: the batch description and the three builds of
 * the step (AVX-512, AVX2/FMA, and baseline x86-64 or other targets), chosen at run time by
 * _kernel.c. */
#ifndef KDSTREAM_KERNEL_H
#define KDSTREAM_KERNEL_H
#include <stdint.h>

#define KD_INLINE static inline __attribute__((always_inline))
#define KD_EPS 1e-8f

typedef struct {
    const int64_t *rows;   /* (R,) event index in the batch */
    const int64_t *items;  /* (R, M) candidates */
    const float *logits;   /* (R, M) teacher logits, -inf = padding */
    const float *temp;     /* (R,) */
    const float *alpha;    /* (R,) */
    int64_t n, m;
} Targets;

typedef struct {
    float *P, *Q, *C, *b, *gP, *gQ, *gC, *gb, *pos_w, *g_pos;
    int32_t *mapP, *mapQ, *mapC; /* row -> slot scratch, all -1 between calls */
    double *gbd; /* per item: the batch's bias gradient (scratch, all 0 between calls) */
    int32_t *mark; /* per item: bit j = item is rest negative j (all 0 between calls) */
    const int64_t *users, *items;
    const float *w;
    const int32_t *ctx; /* (B, L), -1 = padding */
    const int64_t *neg;
    const float *neg_shift; /* (S,) added to negative logits (b - log q), may be NULL */
    const float *pos_shift; /* (B,) subtracted from positive logits (log q), may be NULL */
    Targets soft, trans;
    int64_t B, S, L, d, kd_rest;
    int64_t n_items; /* rows of the item tables (and of gbd, mark) */
    float lr, l2;
    int learn_pos;
} Step;

typedef struct {
    int32_t *map;
    int64_t *rows;
    float *g;     /* (slots, d) gradients, zeroed as each slot is taken */
    int64_t n, d;
} Slots;

/* Seen pairs (_kernel_seen.c): slots (cap, a power of two, -1 = empty) hold the keys (user << 32
 * | item) by open addressing; entry k holds a key again and the user's previous entry (-1 =
 * none); head and count are per user. The caller keeps the load under one half and every array
 * large enough. */
typedef struct {
    int64_t *slots, *keys, *next, *head, *count;
    int64_t cap, n;
} SeenSet;

int64_t kd_seen_add(SeenSet *s, const int64_t *users, const int64_t *items, int64_t n);
void kd_seen_contains(const SeenSet *s, const int64_t *users, const int64_t *items, int64_t n,
                      uint8_t *out);
void kd_seen_rehash(SeenSet *s);
int64_t kd_seen_list(const SeenSet *s, const int64_t *users, int64_t n, int64_t *rows,
                     int64_t *items);

/* Profile build only (CFLAGS=-DKD_PROFILE, x86-64): cycles spent in each section of the step,
 * summed over calls; _kernel.profile() reads and clears them (benchmarks/step_profile.py). */
#define KD_SECTIONS 13
#if defined(KD_PROFILE) && defined(__x86_64__)
#include <x86intrin.h>
extern double kd_profile_cycles[KD_SECTIONS];
#define KD_TIC_START uint64_t kd_tic_ = __rdtsc()
#define KD_TIC(i)                                                \
    do {                                                         \
        const uint64_t kd_now_ = __rdtsc();                      \
        kd_profile_cycles[i] += (double)(kd_now_ - kd_tic_);     \
        kd_tic_ = kd_now_;                                       \
    } while (0)
#else
#define KD_TIC_START ((void)0)
#define KD_TIC(i) ((void)0)
#endif

int kd_run_base(const Step *st);
int kd_run_avx2(const Step *st); /* only called where the CPU has AVX2 and FMA */
int kd_run_avx512(const Step *st); /* ... and AVX-512 F, VL, BW and DQ */
#endif
