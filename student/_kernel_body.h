/* The student's C step, compiled three times (_kernel_avx512.c, _kernel_avx2.c, _kernel_base.c):
 * included by a file that defines KD_ENTRY, the name of its entry point. Pure C, no Python API. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_kernel.h"

KD_INLINE int64_t slot_of(Slots *s, int64_t row) {
    int32_t k = s->map[row];
    if (k < 0) {
        k = (int32_t)s->n++;
        s->map[row] = k;
        s->rows[k] = row;
        memset(s->g + (int64_t)k * s->d, 0, sizeof(float) * (size_t)s->d);
    }
    return k;
}

/* Bias gradients go to a dense per-item scratch ``gbd`` (all 0 between calls) and a bitmap of
 * the items touched: independent adds, where a row -> slot map chains every lookup through
 * the slot count. */
KD_INLINE void bias_acc(const Step *st, uint64_t *touched, int64_t row, double g) {
    st->gbd[row] += g;
    touched[row >> 6] |= (uint64_t)1 << (row & 63);
}

/* The bias Adagrad step of every touched row, in item order (the bitmap's set bits), leaving
 * the scratch and the bitmap at 0. */
KD_INLINE void bias_adagrad(const Step *st, uint64_t *touched) {
    for (int64_t w = 0; w < (st->n_items + 63) >> 6; w++) {
        for (uint64_t bits = touched[w]; bits; bits &= bits - 1) {
            const int64_t row = (w << 6) + __builtin_ctzll(bits);
            const float g = (float)st->gbd[row];
            st->gbd[row] = 0.0;
            if (g == 0.0f) continue;
            st->gb[row] += g * g;
            st->b[row] -= st->lr * g / sqrtf(st->gb[row] + KD_EPS);
        }
        touched[w] = 0;
    }
}

/* Rows of the default width (d = 32) as four 8-float vectors: GCC/Clang vector extensions give
 * AVX code in the AVX2 build and SSE pairs in the baseline one, where plain loops over these
 * short rows stayed scalar. Unaligned: rows start anywhere in the tables. */
typedef float v8f __attribute__((vector_size(32), aligned(4)));

KD_INLINE v8f ld(const float *p) { return *(const v8f *)p; }
KD_INLINE void st8(float *p, v8f x) { *(v8f *)p = x; }
typedef int32_t v8i __attribute__((vector_size(32)));
typedef int32_t v8iu __attribute__((vector_size(32), aligned(4)));
KD_INLINE v8iu ldi(const int32_t *p) { return *(const v8iu *)p; }
KD_INLINE float hmax(v8f x) {
    float m = x[0];
    for (int k = 1; k < 8; k++) m = x[k] > m ? x[k] : m;
    return m;
}
KD_INLINE float hsum(v8f x) {
    return ((x[0] + x[4]) + (x[1] + x[5])) + ((x[2] + x[6]) + (x[3] + x[7]));
}

KD_INLINE float dot(const float *a, const float *b, int64_t d) {
    if (d == 32)
        return hsum(ld(a) * ld(b) + ld(a + 8) * ld(b + 8) + ld(a + 16) * ld(b + 16) +
                    ld(a + 24) * ld(b + 24));
    float acc = 0.0f;
    for (int64_t k = 0; k < d; k++) acc += a[k] * b[k];
    return acc;
}

KD_INLINE void axpy(float *y, float a, const float *x, int64_t d) {
    if (d == 32) {
        for (int k = 0; k < 32; k += 8) st8(y + k, ld(y + k) + a * ld(x + k));
        return;
    }
    for (int64_t k = 0; k < d; k++) y[k] += a * x[k];
}


/* kd_exp on eight lanes: the same polynomial, round-to-nearest by truncating x*log2(e) +- 0.5
 * (the reduced argument stays within [-0.35, 0.35], where the polynomial holds). */
/* Lanes of a where mask is set, of b elsewhere (C has no ?: on vectors). */
KD_INLINE v8f sel(v8i mask, v8f a, v8f b) { return (v8f)((mask & (v8i)a) | (~mask & (v8i)b)); }

#if defined(__AVX__) && defined(__GNUC__) && !defined(__clang__)
/* maxps: one instruction for a compare and a blend, the same lanes (b where either is NaN) */
typedef float kd_v8sf __attribute__((vector_size(32)));
KD_INLINE v8f vmax(v8f a, v8f b) {
    return (v8f)__builtin_ia32_maxps256((kd_v8sf)a, (kd_v8sf)b);
}
#else
KD_INLINE v8f vmax(v8f a, v8f b) { return sel(a > b, a, b); }
#endif

KD_INLINE v8f kd_exp8(v8f x) {
    const v8f zero = {0};
    const v8f lo = zero - 87.3365478515625f;
    const v8f hi = zero + 88.3762626647949f; /* where expf overflows */
    v8f xc = sel(x < lo, lo, x);
    xc = sel(xc > hi, hi, xc);
    const v8f t = xc * 1.44269504088896341f;
    const v8i n = __builtin_convertvector(t + sel(t < 0.0f, zero - 0.5f, zero + 0.5f), v8i);
    const v8f fx = __builtin_convertvector(n, v8f);
    const v8f r = xc - fx * 0.693359375f + fx * 2.12194440e-4f;
    v8f y = r * 1.9875691500e-4f + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * r * r + r + 1.0f;
    return sel(x < lo, zero, y * (v8f)((n + 127) << 23));
}

/* exp for arguments <= 0 or -inf, as every softmax shifted by its maximum has: arguments below
 * ``lo`` (-inf included) are raised to it, giving 2^-126 (a normal float, where the sum and the
 * products it meets leave it as good as 0; FTZ/DAZ is on) instead of a compare and a select;
 * no upper clamp; n rounded by adding 1.5 * 2^23, which leaves n in the low bits (two float
 * adds where two conversions cost more); and a degree-4 polynomial fitted for relative error
 * on [-ln2/2, ln2/2] instead of kd_exp8's degree 6: relative error 5.7e-6 at most with FMA
 * (9.5e-6 without) against 3e-7 (benchmarks/exp_fit.py fits these coefficients and measures
 * this pipeline and the degree-6 one), far below what a sampled softmax's gradient can tell
 * apart. Every row of the hard loss's and distillation's softmaxes takes this one; the
 * positives' own terms and the logistic loss of negative events keep kd_exp8. */
KD_INLINE v8f kd_exp8_nonpos(v8f x) {
    const v8f lo = (v8f){0} - 87.3365478515625f;
    x = vmax(x, lo);
    const v8f tm = x * 1.44269504088896341f + 12582912.0f; /* round(x log2 e) + 1.5 * 2^23 */
    v8f tb = tm; /* an opaque copy: keeps (tm - 1.5 * 2^23) from folding back to x log2 e */
#if defined(__AVX__)
    __asm__("" : "+x"(tb));
#else
    __asm__("" : "+m"(tb));
#endif
    const v8f fx = tb - 12582912.0f;
    /* one constant, no Cody-Waite pair: with FMA (the AVX2 build) fx * ln2 is not rounded, and
     * |n| <= 126 keeps ln2's own rounding below 3e-7 (GCC merged the pair into this anyway) */
    const v8f r = x - fx * 0.693147180559945f;
    v8f y = r * 0.0412755571f + 0.167540148f;
    y = y * r + 0.500051737f;
    y = y * r * r + r + 1.0f;
    /* tm's bits are 0x4B400000 + n; shifted by 23 the constant part leaves the word */
    return y * (v8f)(((v8i)tm + 127) << 23);
}

/* exp of one float: lane 0 of the vector version, so every exp of the step is the same
 * function (no libm call, no register spills around one). */
KD_INLINE float kd_exp(float x) {
    const v8f v = {x, x, x, x, x, x, x, x};
    return kd_exp8(v)[0];
}

/* z[j] = exp(z[j] - shift) for n floats, none above ``shift``; returns their sum. */
KD_INLINE float exp_shifted(float *z, int64_t n, float shift) {
    v8f sum = {0};
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        const v8f e = kd_exp8_nonpos(ld(z + j) - shift);
        st8(z + j, e);
        sum += e;
    }
    float total = hsum(sum);
    for (; j < n; j++) {
        z[j] = kd_exp8_nonpos((v8f){0} + (z[j] - shift))[0];
        total += z[j];
    }
    return total;
}

/* A row of the default width in an aligned table: two cache lines, fetched ahead of its use. */
KD_INLINE void fetch_row32(const float *row) {
    __builtin_prefetch(row);
    __builtin_prefetch(row + 16);
}

#if defined(__AVX512F__)
/* The AVX-512 build (_kernel_avx512.c): the sampled softmax's three products, most of the plain
 * step and bound by multiply-adds, take 16-float vectors, a d = 32 row in two. Each lane sums
 * its terms in the same order as the 8-float code, so this build's tables equal the AVX2
 * build's bit for bit (tests/test_student_kernel.py). */
#define KD_WIDE 1
typedef float v16f __attribute__((vector_size(64), aligned(4)));
typedef int32_t v16i __attribute__((vector_size(64)));
typedef int32_t v16iu __attribute__((vector_size(64), aligned(4)));
KD_INLINE v16f ld16(const float *p) { return *(const v16f *)p; }
KD_INLINE void st16(float *p, v16f x) { *(v16f *)p = x; }
KD_INLINE v16iu ldi16(const int32_t *p) { return *(const v16iu *)p; }
KD_INLINE v16f sel16(v16i mask, v16f a, v16f b) {
    return (v16f)((mask & (v16i)a) | (~mask & (v16i)b));
}
KD_INLINE float hmax16(v16f x) {
    float m = x[0];
    for (int k = 1; k < 16; k++) m = x[k] > m ? x[k] : m;
    return m;
}
#endif

/* out[j] = rows[j] . q for n rows. With ``fetch`` (d = 32), row fetch[j] of ``table`` is fetched
 * while row j is multiplied: rows wanted next, at random places, paced by the dot products. */
KD_INLINE void dots(float *restrict out, const float *const *rows, int64_t n, const float *q,
                    int64_t d, const float *table, const int64_t *fetch) {
    if (d == 32) {
        const v8f q0 = ld(q), q1 = ld(q + 8), q2 = ld(q + 16), q3 = ld(q + 24);
        for (int64_t j = 0; j < n; j++) {
            if (fetch) fetch_row32(table + fetch[j] * 32);
            const float *r = rows[j];
            out[j] = hsum(ld(r) * q0 + ld(r + 8) * q1 + ld(r + 16) * q2 + ld(r + 24) * q3);
        }
        return;
    }
    for (int64_t j = 0; j < n; j++) out[j] = dot(rows[j], q, d);
}

/* acc += sum_j g[j] * rows[j]; for d = 32 the sums stay in registers (two sets, so consecutive
 * FMAs do not wait on each other) and meet ``acc`` once. */
KD_INLINE void add_rows(float *restrict acc, const float *restrict g, const float *const *rows,
                        int64_t n, int64_t d, float scale) {
    if (d != 32) {
        for (int64_t j = 0; j < n; j++) axpy(acc, scale * g[j], rows[j], d);
        return;
    }
    v8f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0};
    int64_t j = 0;
    for (; j + 2 <= n; j += 2) {
        const float g0 = g[j], g1 = g[j + 1];
        const float *r0 = rows[j], *r1 = rows[j + 1];
        a0 += g0 * ld(r0); a1 += g0 * ld(r0 + 8); a2 += g0 * ld(r0 + 16); a3 += g0 * ld(r0 + 24);
        b0 += g1 * ld(r1); b1 += g1 * ld(r1 + 8); b2 += g1 * ld(r1 + 16); b3 += g1 * ld(r1 + 24);
    }
    if (j < n) {
        const float *r = rows[j];
        a0 += g[j] * ld(r); a1 += g[j] * ld(r + 8); a2 += g[j] * ld(r + 16);
        a3 += g[j] * ld(r + 24);
    }
    st8(acc, ld(acc) + scale * (a0 + b0));
    st8(acc + 8, ld(acc + 8) + scale * (a1 + b1));
    st8(acc + 16, ld(acc + 16) + scale * (a2 + b2));
    st8(acc + 24, ld(acc + 24) + scale * (a3 + b3));
}

/* add_rows for two events sharing the rows (d = 32): each row is loaded once for both. */
KD_INLINE void add_rows2(float *restrict acc_a, float *restrict acc_b, const float *restrict ga,
                         const float *restrict gb, const float *const *rows, int64_t n,
                         float sa, float sb) {
    v8f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0};
    for (int64_t j = 0; j < n; j++) {
        const float *r = rows[j];
        const v8f r0 = ld(r), r1 = ld(r + 8), r2 = ld(r + 16), r3 = ld(r + 24);
        a0 += ga[j] * r0; a1 += ga[j] * r1; a2 += ga[j] * r2; a3 += ga[j] * r3;
        b0 += gb[j] * r0; b1 += gb[j] * r1; b2 += gb[j] * r2; b3 += gb[j] * r3;
    }
    st8(acc_a, ld(acc_a) + sa * a0); st8(acc_a + 8, ld(acc_a + 8) + sa * a1);
    st8(acc_a + 16, ld(acc_a + 16) + sa * a2); st8(acc_a + 24, ld(acc_a + 24) + sa * a3);
    st8(acc_b, ld(acc_b) + sb * b0); st8(acc_b + 8, ld(acc_b + 8) + sb * b1);
    st8(acc_b + 16, ld(acc_b + 16) + sb * b2); st8(acc_b + 24, ld(acc_b + 24) + sb * b3);
}

#if defined(__AVX512F__)
/* add_rows2 for four events (d = 32): acc_i += s_i * sum_j g_i[j] rows[j], each row loaded
 * once for all four; each lane's sum is add_rows2's. */
KD_INLINE void add_rows4(float *const acc[4], const float *const g[4], const float s[4],
                         const float *const *rows, int64_t n) {
    v16f a0 = {0}, a1 = {0}, b0 = {0}, b1 = {0}, c0 = {0}, c1 = {0}, e0 = {0}, e1 = {0};
    for (int64_t j = 0; j < n; j++) {
        const float *r = rows[j];
        const v16f r0 = ld16(r), r1 = ld16(r + 16);
        a0 += g[0][j] * r0; a1 += g[0][j] * r1;
        b0 += g[1][j] * r0; b1 += g[1][j] * r1;
        c0 += g[2][j] * r0; c1 += g[2][j] * r1;
        e0 += g[3][j] * r0; e1 += g[3][j] * r1;
    }
    st16(acc[0], ld16(acc[0]) + s[0] * a0); st16(acc[0] + 16, ld16(acc[0] + 16) + s[0] * a1);
    st16(acc[1], ld16(acc[1]) + s[1] * b0); st16(acc[1] + 16, ld16(acc[1] + 16) + s[1] * b1);
    st16(acc[2], ld16(acc[2]) + s[2] * c0); st16(acc[2] + 16, ld16(acc[2] + 16) + s[2] * c1);
    st16(acc[3], ld16(acc[3]) + s[3] * e0); st16(acc[3] + 16, ld16(acc[3] + 16) + s[3] * e1);
}
#endif

/* s->g[slot of row] += a * x, with no branch on whether the row has a slot yet. A new
 * slot's gradient row is not zeroed first but masked out bit by bit (the arena's memory may
 * hold anything, NaN included, so multiplying by zero would not do). d = 32 only. */
KD_INLINE void slot_axpy32(Slots *s, int64_t row, float a, const float *x) {
    int32_t k = s->map[row];
    const int fresh = k < 0;
    k = fresh ? (int32_t)s->n : k;
    s->map[row] = k;
    s->rows[s->n] = row;
    s->n += fresh;
    float *y = s->g + (int64_t)k * 32;
    const v8i keep = (v8i){0} + (fresh ? 0 : -1);
    for (int j = 0; j < 32; j += 8) st8(y + j, (v8f)((v8i)ld(y + j) & keep) + a * ld(x + j));
}

/* Distillation of one target row into the event's query gradient ``dh`` (see _distil):
 * T^2 KL(teacher_T || student_T) over the M candidates plus the first ``n_rest`` negatives,
 * times the row's alpha. ``z``, ``pt``, ``g`` hold M + n_rest floats, ``rows`` as many pointers.
 * The rest negatives' biases are read from ``b_rest`` and their gradients summed in ``g_rest``
 * (dense, by position: the same n_rest items in every row of the batch). */
KD_INLINE void distil(const Step *st, const Targets *t, int64_t r, const float *q, float *dh,
                      float *z, float *pt, float *g, const float **rows,
                      const float *const *qneg, const float *b_rest, double *g_rest,
                      uint64_t *touched, int64_t n_rest, int64_t d) {
    const int64_t m = t->m, n = m + n_rest;
    const int64_t *cand = t->items + r * m;
    const float *tl = t->logits + r * m;
    const float temp = t->temp[r], scale = temp * t->alpha[r], inv_temp = 1.0f / temp;
    for (int64_t j = 0; j < m; j++) rows[j] = st->Q + cand[j] * d;
    for (int64_t j = 0; j < n_rest; j++) rows[m + j] = qneg[j];
    /* the next row's candidates are fetched while this row's are multiplied: they sit anywhere
     * in the item table, and a burst of all the prefetches up front (tried) filled the miss
     * buffers and gained little; the biases' and marks' lines (tried) gained nothing */
    dots(z, rows, m, q, d, st->Q, r + 1 < t->n ? t->items + (r + 1) * m : NULL);
    dots(z + m, rows + m, n_rest, q, d, NULL, NULL);
    float zmax = -INFINITY, tmax = -INFINITY;
    for (int64_t j = 0; j < m; j++) {
        if (isfinite(tl[j])) {  /* padding on the teacher's side is left out on both */
            z[j] = (z[j] + st->b[cand[j]]) * inv_temp;
            if (z[j] > zmax) zmax = z[j];
            if (tl[j] * inv_temp > tmax) tmax = tl[j] * inv_temp;
        } else {
            z[j] = -INFINITY;
        }
    }
    int32_t hits = 0; /* bit j: rest negative j is among the candidates */
    for (int64_t c = 0; c < m; c++) hits |= st->mark[cand[c]];
    for (int64_t j = 0; j < n_rest; j++) {
        if ((hits >> j) & 1) {
            z[m + j] = -INFINITY;  /* a negative that is a candidate takes part once */
        } else {
            z[m + j] = (z[m + j] + b_rest[j]) * inv_temp;
            if (z[m + j] > zmax) zmax = z[m + j];
        }
    }
    /* reciprocals once per row: a division per candidate costs several multiplies */
    const float zs_inv = scale / exp_shifted(z, n, zmax);
    for (int64_t j = 0; j < m; j++) pt[j] = tl[j] * inv_temp;
    const float ts_inv = scale / exp_shifted(pt, m, tmax);
    for (int64_t j = 0; j < m; j++) g[j] = z[j] * zs_inv - pt[j] * ts_inv;
    for (int64_t j = m; j < n; j++) g[j] = z[j] * zs_inv;
    add_rows(dh, g, rows, n, d, 1.0f);
    for (int64_t j = 0; j < m; j++) bias_acc(st, touched, cand[j], g[j]);
    for (int64_t j = 0; j < n_rest; j++) g_rest[j] += g[m + j];
}

KD_INLINE void adagrad(float *table, float *acc, const Slots *s, float lr, float l2,
                       const int64_t d) {
    for (int64_t k = 0; k < s->n; k++) {
        if (k + 4 < s->n) { /* rows sit at random places in the table: fetch ahead */
            __builtin_prefetch(table + s->rows[k + 4] * d, 1);
            __builtin_prefetch(acc + s->rows[k + 4], 1);
        }
        float *row = table + s->rows[k] * d;
        float *g = s->g + k * d;
        float *a = acc + s->rows[k];
        if (d == 32) {
            v8f g8[4], sq = {0};
            for (int j = 0; j < 4; j++) {
                g8[j] = ld(g + 8 * j) + l2 * ld(row + 8 * j);
                sq += g8[j] * g8[j];
            }
            *a += hsum(sq) / 32.0f;
            const float step = lr / sqrtf(*a + KD_EPS);
            for (int j = 0; j < 4; j++) st8(row + 8 * j, ld(row + 8 * j) - step * g8[j]);
            continue;
        }
        float sq = 0.0f;
        for (int64_t j = 0; j < d; j++) {
            g[j] += l2 * row[j];
            sq += g[j] * g[j];
        }
        *a += sq / (float)d;
        const float step = lr / sqrtf(*a + KD_EPS);
        for (int64_t j = 0; j < d; j++) row[j] -= step * g[j];
    }
}

/* One arena for a call's scratch: a single malloc, carved in order, freed once. */
typedef struct {
    char *base;
    size_t used, size;
} Arena;

static void *take(Arena *a, size_t bytes) {
    bytes = (bytes + 63) & ~(size_t)63;  /* 64-byte aligned pieces */
    void *p = a->base + a->used;
    a->used += bytes;
    return p;
}

#define TILE 16 /* positive events per tile of the sampled softmax */

KD_INLINE int step_body(const Step *st, const int64_t d) {
    const int64_t B = st->B, S = st->S, L = st->L;
    const int64_t n_rest = st->kd_rest < S ? st->kd_rest : S;
    const int64_t max_m = st->soft.m > st->trans.m ? st->soft.m : st->trans.m;
    const int64_t n_kd = max_m + n_rest + 1;
    const size_t f = sizeof(float), i8 = sizeof(int64_t);
    size_t size = f * (size_t)(B * d * 2 + 3 * B + 4 * (S + 1) + TILE * (S + 1 + d) + 3 * n_kd
                               + L + 1 + 2 * S * d)
                  + sizeof(double) * (size_t)(S + 1)
                  + sizeof(float *) * (size_t)(S + 1 + n_kd)
                  + i8 * (size_t)(2 * B + (B + S) + (B * L + 1) + S + 1)
                  + i8 * (size_t)((st->n_items + 63) >> 6) /* the touched bias rows' bitmap */
                  + f * (size_t)(d * (B + (B + S) + (B * L + 1)))
                  + 64 * 40; /* up to 64 bytes of alignment per take */
    Arena ar = {malloc(size), 0, size};
    if (ar.base == NULL) return -1;
    /* the small buffers start at 0 (one memset); the per-slot gradients, most of the arena,
     * are zeroed as their slots are taken, and h is written whole by the forward pass */
    float *dh = take(&ar, f * B * d), *hard = take(&ar, f * B);
    float *kz = take(&ar, f * n_kd), *kpt = take(&ar, f * n_kd);
    float *kg = take(&ar, f * n_kd), *dpos = take(&ar, f * (L + 1));
    float *qnegT = take(&ar, f * S * d); /* (d, S): the negatives' vectors, transposed */
    /* (S, d): the same vectors side by side, aligned, so the query gradients stream them from
     * 16 KB of L1 instead of gathering rows that straddle cache lines across the table */
    float *qnegR = take(&ar, f * S * d);
    float *zbase = take(&ar, f * (S + 1)); /* b - log q of each negative */
    float *bneg = take(&ar, f * (S + 1)); /* b of each negative */
    float *zt = take(&ar, f * TILE * (S + 1)); /* a tile's logits, then its gradients */
    float *hs = take(&ar, f * TILE * d); /* a tile's queries, each times its softmax's scale */
    float *dzp = take(&ar, f * B), *zp_all = take(&ar, f * B);
    int64_t *pos_ev = take(&ar, i8 * B);
    int32_t *neg32 = take(&ar, sizeof(int32_t) * (S + 1));
    double *gneg_b = take(&ar, sizeof(double) * (S + 1));
    const float **qneg = take(&ar, sizeof(float *) * (S + 1));
    const float **krows = take(&ar, sizeof(float *) * n_kd);
    int64_t *neg_slot = take(&ar, i8 * (S + 1));
    uint64_t *touched = take(&ar, i8 * (size_t)((st->n_items + 63) >> 6)); /* bias rows */
    memset(ar.base, 0, ar.used);
    float *h = take(&ar, f * B * d);
    Slots sp = {st->mapP, take(&ar, i8 * B), take(&ar, f * B * d), 0, d};
    Slots sq = {st->mapQ, take(&ar, i8 * (B + S)), take(&ar, f * (B + S) * d), 0, d};
    Slots sc = {st->mapC, take(&ar, i8 * (B * L + 1)), take(&ar, f * (B * L + 1) * d), 0, d};

    KD_TIC_START;
    /* forward: query vectors h = p_u + sum_l w_l c_l, hard-loss weights */
    int any_positive = 0;
    for (int64_t e = 0; e < B; e++) {
        float *he = h + e * d;
        if (d == 32 && e + 4 < B) {
            /* the rows of the event four on: users and contexts sit anywhere in their tables
             * (measured: 1, 2, 4 and 8 ahead all gain, 4 the most) */
            const int64_t en = e + 4;
            fetch_row32(st->P + st->users[en] * 32);
            for (int64_t l = 0; l < L; l++) {
                const int32_t c = st->ctx[en * L + l];
                fetch_row32(st->C + (int64_t)(c < 0 ? 0 : c) * 32);
            }
        }
        memcpy(he, st->P + st->users[e] * d, f * d);
        for (int64_t l = 0; l < L; l++) {
            const int32_t c = st->ctx[e * L + l];
            if (c >= 0) axpy(he, st->pos_w[l], st->C + (int64_t)c * d, d);
        }
        hard[e] = fabsf(st->w[e]);
        any_positive |= st->w[e] > 0;
    }
    for (int64_t r = 0; r < st->soft.n; r++) { /* (1 - a) * hard + a * soft */
        const int64_t e = st->soft.rows[r];
        hard[e] = fabsf(st->w[e]) * (1.0f - st->soft.alpha[r]);
    }
    for (int64_t j = 0; j < S; j++) {
        const float *qj = st->Q + st->neg[j] * d;
        qneg[j] = qnegR + j * d;
        memcpy(qnegR + j * d, qj, f * d);
        for (int64_t k = 0; k < d; k++) qnegT[k * S + j] = qj[k];
        bneg[j] = st->b[st->neg[j]];
        zbase[j] = bneg[j] + (st->neg_shift ? st->neg_shift[j] : 0.0f);
        neg32[j] = (int32_t)st->neg[j];
    }
    const int sampled = any_positive && S > 0;
    if (sampled)
        for (int64_t j = 0; j < S; j++) neg_slot[j] = slot_of(&sq, st->neg[j]);
    float *gq_neg = sq.g; /* the negatives hold the first S slots of Q's gradient */

    KD_TIC(0);
    /* hard loss, pass 1: each event's own item; negative events take the logistic push-down,
     * positive ones are listed for the sampled softmax */
    int64_t n_pos = 0;
    for (int64_t e = 0; e < B; e++) {
        const int64_t item = st->items[e];
        if (e + 8 < B) fetch_row32(st->Q + st->items[e + 8] * d); /* own item, 8 events on */
        const float zpos = dot(h + e * d, st->Q + item * d, d) + st->b[item];
        dzp[e] = 0.0f;
        if (st->w[e] > 0 && sampled) {
            zp_all[e] = zpos - (st->pos_shift ? st->pos_shift[e] : 0.0f);
            pos_ev[n_pos++] = e;
        } else if (st->w[e] <= 0) {
            dzp[e] = hard[e] / (1.0f + kd_exp(-zpos));
        }
    }
    /* pass 2: sampled softmax over the shared negatives, TILE events at a time, so each
     * negative's vector and gradient row is read once per tile rather than once per event */
    KD_TIC(1);
    const int fast = d == 32 && S % 16 == 0;
    for (int64_t t0 = 0; t0 < n_pos; t0 += TILE) {
        const int64_t te = n_pos - t0 < TILE ? n_pos - t0 : TILE;
        const int64_t *ev = pos_ev + t0;
        float tile_max[TILE]; /* fast path: each row's largest negative logit */
#if defined(KD_WIDE)
        if (fast && S % 32 == 0) {
            /* the fast path below with four events x 32 negatives in eight 16-float registers */
            const v16f ninf = (v16f){0} - INFINITY;
            for (int64_t i0 = 0; i0 < te; i0 += 4) {
                const int64_t ni = te - i0 < 4 ? te - i0 : 4;
                const float *hr[4];
                v16i it[4];
                v16f mx[4] = {ninf, ninf, ninf, ninf};
                for (int64_t i = 0; i < 4; i++) {
                    const int64_t e = ev[i0 + (i < ni ? i : 0)];
                    hr[i] = h + e * 32;
                    it[i] = (v16i){0} + (int32_t)st->items[e];
                }
                for (int64_t j0 = 0; j0 < S; j0 += 32) {
                    const v16f base0 = ld16(zbase + j0), base1 = ld16(zbase + j0 + 16);
                    v16f a00 = base0, a01 = base1, a10 = base0, a11 = base1;
                    v16f a20 = base0, a21 = base1, a30 = base0, a31 = base1;
                    for (int k = 0; k < 32; k++) {
                        const v16f r0 = ld16(qnegT + k * S + j0);
                        const v16f r1 = ld16(qnegT + k * S + j0 + 16);
                        a00 += hr[0][k] * r0; a01 += hr[0][k] * r1;
                        a10 += hr[1][k] * r0; a11 += hr[1][k] * r1;
                        a20 += hr[2][k] * r0; a21 += hr[2][k] * r1;
                        a30 += hr[3][k] * r0; a31 += hr[3][k] * r1;
                    }
                    const v16i n0 = ldi16(neg32 + j0), n1 = ldi16(neg32 + j0 + 16);
                    a00 = sel16(n0 == it[0], ninf, a00); a01 = sel16(n1 == it[0], ninf, a01);
                    a10 = sel16(n0 == it[1], ninf, a10); a11 = sel16(n1 == it[1], ninf, a11);
                    a20 = sel16(n0 == it[2], ninf, a20); a21 = sel16(n1 == it[2], ninf, a21);
                    a30 = sel16(n0 == it[3], ninf, a30); a31 = sel16(n1 == it[3], ninf, a31);
                    mx[0] = sel16(a00 > mx[0], a00, mx[0]); mx[0] = sel16(a01 > mx[0], a01, mx[0]);
                    mx[1] = sel16(a10 > mx[1], a10, mx[1]); mx[1] = sel16(a11 > mx[1], a11, mx[1]);
                    mx[2] = sel16(a20 > mx[2], a20, mx[2]); mx[2] = sel16(a21 > mx[2], a21, mx[2]);
                    mx[3] = sel16(a30 > mx[3], a30, mx[3]); mx[3] = sel16(a31 > mx[3], a31, mx[3]);
                    float *z0 = zt + (i0)*S + j0;
                    st16(z0, a00); st16(z0 + 16, a01);
                    if (ni > 1) { st16(z0 + S, a10); st16(z0 + S + 16, a11); }
                    if (ni > 2) { st16(z0 + 2 * S, a20); st16(z0 + 2 * S + 16, a21); }
                    if (ni > 3) { st16(z0 + 3 * S, a30); st16(z0 + 3 * S + 16, a31); }
                }
                for (int64_t i = 0; i < ni; i++) tile_max[i0 + i] = hmax16(mx[i]);
            }
        } else
#endif
        if (fast) {
            /* zt[i] = zbase + h_i . Q_neg^T: four events x 16 negatives in eight registers; the
             * event's own item masked out and the row's maximum taken while they are there */
            const v8f ninf = (v8f){0} - INFINITY;
            for (int64_t i0 = 0; i0 < te; i0 += 4) {
                const int64_t ni = te - i0 < 4 ? te - i0 : 4;
                const float *hr[4];
                v8i it[4];
                v8f mx[4] = {ninf, ninf, ninf, ninf};
                for (int64_t i = 0; i < 4; i++) {
                    const int64_t e = ev[i0 + (i < ni ? i : 0)];
                    hr[i] = h + e * 32;
                    it[i] = (v8i){0} + (int32_t)st->items[e];
                }
                for (int64_t j0 = 0; j0 < S; j0 += 16) {
                    const v8f base0 = ld(zbase + j0), base1 = ld(zbase + j0 + 8);
                    v8f a00 = base0, a01 = base1, a10 = base0, a11 = base1;
                    v8f a20 = base0, a21 = base1, a30 = base0, a31 = base1;
                    for (int k = 0; k < 32; k++) {
                        const v8f r0 = ld(qnegT + k * S + j0), r1 = ld(qnegT + k * S + j0 + 8);
                        a00 += hr[0][k] * r0; a01 += hr[0][k] * r1;
                        a10 += hr[1][k] * r0; a11 += hr[1][k] * r1;
                        a20 += hr[2][k] * r0; a21 += hr[2][k] * r1;
                        a30 += hr[3][k] * r0; a31 += hr[3][k] * r1;
                    }
                    const v8i n0 = ldi(neg32 + j0), n1 = ldi(neg32 + j0 + 8);
                    a00 = sel(n0 == it[0], ninf, a00); a01 = sel(n1 == it[0], ninf, a01);
                    a10 = sel(n0 == it[1], ninf, a10); a11 = sel(n1 == it[1], ninf, a11);
                    a20 = sel(n0 == it[2], ninf, a20); a21 = sel(n1 == it[2], ninf, a21);
                    a30 = sel(n0 == it[3], ninf, a30); a31 = sel(n1 == it[3], ninf, a31);
                    mx[0] = vmax(mx[0], vmax(a00, a01)); mx[1] = vmax(mx[1], vmax(a10, a11));
                    mx[2] = vmax(mx[2], vmax(a20, a21)); mx[3] = vmax(mx[3], vmax(a30, a31));
                    float *z0 = zt + (i0)*S + j0;
                    st8(z0, a00); st8(z0 + 8, a01);
                    if (ni > 1) { st8(z0 + S, a10); st8(z0 + S + 8, a11); }
                    if (ni > 2) { st8(z0 + 2 * S, a20); st8(z0 + 2 * S + 8, a21); }
                    if (ni > 3) { st8(z0 + 3 * S, a30); st8(z0 + 3 * S + 8, a31); }
                }
                for (int64_t i = 0; i < ni; i++) tile_max[i0 + i] = hmax(mx[i]);
            }
        } else {
            for (int64_t i = 0; i < te; i++) {
                float *z = zt + i * S;
                const float *he = h + ev[i] * d;
                for (int64_t j = 0; j < S; j++) z[j] = zbase[j];
                for (int64_t k = 0; k < d; k++)
                    for (int64_t j = 0; j < S; j++) z[j] += he[k] * qnegT[k * S + j];
            }
        }
        KD_TIC(2);
        /* softmax of each row against its positive (the event's own item is not a negative):
         * the rows' exponentials, then their denominators eight rows at a time, off the rows'
         * critical path. The rows are not divided by their denominators: the products that
         * read them take each row's scale instead (the query gradients scale their sums, the
         * negatives' gradients read the queries scaled), 16 multiplies per row fewer. */
        float zsh[TILE], sums[TILE], hd[TILE], sc[TILE], dzt[TILE];
        for (int64_t i = 0; i < TILE; i++) {
            if (i >= te) { /* padding rows: finite, unused */
                zsh[i] = 0.0f; sums[i] = 1.0f; hd[i] = 0.0f;
                continue;
            }
            const int64_t e = ev[i];
            const int64_t item = st->items[e];
            float *z = zt + i * S;
            const float zp = zp_all[e];
            float zmax = zp;
            int64_t j = 0;
            if (fast) {  /* masked, and its maximum taken, with the logits */
                j = S;
                zmax = tile_max[i] > zp ? tile_max[i] : zp;
            } else if (S >= 8) {
                const v8i it8 = (v8i){0} + (int32_t)item;
                const v8f ninf = (v8f){0} - INFINITY;
                v8f m8 = (v8f){0} + zp;
                for (; j + 8 <= S; j += 8) {
                    const v8f zz = sel(ldi(neg32 + j) == it8, ninf, ld(z + j));
                    st8(z + j, zz);
                    m8 = sel(zz > m8, zz, m8);
                }
                zmax = hmax(m8);
            }
            for (; j < S; j++) {
                if (st->neg[j] == item) z[j] = -INFINITY;
                zmax = z[j] > zmax ? z[j] : zmax;
            }
            zsh[i] = zp - zmax;
            sums[i] = exp_shifted(z, S, zmax);
            hd[i] = hard[e];
        }
        for (int64_t i0 = 0; i0 < TILE; i0 += 8) {
            const v8f ep = kd_exp8(ld(zsh + i0)), denom = ep + ld(sums + i0), hh = ld(hd + i0);
            st8(dzt + i0, (ep / denom - 1.0f) * hh);
            st8(sc + i0, hh / denom);
        }
        for (int64_t i = 0; i < te; i++) dzp[ev[i]] = dzt[i];
        for (int64_t i = 0; i < te; i++) {
            const float *he = h + ev[i] * d;
            for (int64_t k = 0; k < d; k++) hs[i * d + k] = sc[i] * he[k];
        }
        /* the negatives' bias gradients, sum_i sc_i z_ij: 64 negatives at a time in eight
         * registers, where a sum per (event, negative) pair inside the row gradients' loop
         * took a scalar multiply-add from the FMA ports for every eight vector ones */
        int64_t jb = 0;
        for (; jb + 64 <= S; jb += 64) {
            v8f g8[8] = {{0}};
            for (int64_t i = 0; i < te; i++)
                for (int k = 0; k < 8; k++) g8[k] += sc[i] * ld(zt + i * S + jb + 8 * k);
            for (int k = 0; k < 8; k++)
                for (int l = 0; l < 8; l++) gneg_b[jb + 8 * k + l] += g8[k][l];
        }
        for (int64_t j = jb; j < S; j++) {
            double g = 0.0;
            for (int64_t i = 0; i < te; i++) g += sc[i] * zt[i * S + j];
            gneg_b[j] += g;
        }
        KD_TIC(3);
        /* dh of each event: Q_neg^T times its row, two events per pass over the rows */
        int64_t i = 0;
#if defined(KD_WIDE)
        for (; d == 32 && i + 4 <= te; i += 4) {
            float *const acc[4] = {dh + ev[i] * 32, dh + ev[i + 1] * 32, dh + ev[i + 2] * 32,
                                   dh + ev[i + 3] * 32};
            const float *const g[4] = {zt + i * S, zt + (i + 1) * S, zt + (i + 2) * S,
                                       zt + (i + 3) * S};
            add_rows4(acc, g, sc + i, qneg, S);
        }
#endif
        for (; d == 32 && i + 2 <= te; i += 2)
            add_rows2(dh + ev[i] * 32, dh + ev[i + 1] * 32, zt + i * S, zt + (i + 1) * S, qneg, S,
                      sc[i], sc[i + 1]);
        for (; i < te; i++) add_rows(dh + ev[i] * d, zt + i * S, qneg, S, d, sc[i]);
        KD_TIC(4);
        /* each negative's row gradient: sum over the tile's events, one read-modify-write */
        int64_t j0 = 0;
#if defined(KD_WIDE)
        for (; d == 32 && j0 + 4 <= S; j0 += 4) {
            v16f a[4][2] = {{{0}}};
            for (int64_t i = 0; i < te; i++) {
                const float *he = hs + i * 32;
                const float *gi = zt + i * S + j0;
                const v16f h0 = ld16(he), h1 = ld16(he + 16);
                for (int n = 0; n < 4; n++) {
                    a[n][0] += gi[n] * h0;
                    a[n][1] += gi[n] * h1;
                }
            }
            for (int n = 0; n < 4; n += 2) { /* a pair at a time, as the loop below sums them */
                float *ra = gq_neg + neg_slot[j0 + n] * 32, *rb = gq_neg + neg_slot[j0 + n + 1] * 32;
                if (ra == rb) {
                    a[n][0] += a[n + 1][0]; a[n][1] += a[n + 1][1];
                } else {
                    st16(rb, ld16(rb) + a[n + 1][0]); st16(rb + 16, ld16(rb + 16) + a[n + 1][1]);
                }
                st16(ra, ld16(ra) + a[n][0]); st16(ra + 16, ld16(ra + 16) + a[n][1]);
            }
        }
#endif
        /* d = 32: two negatives per pass, eight independent FMA chains instead of four */
        for (; d == 32 && j0 + 2 <= S; j0 += 2) {
            v8f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0};
            for (int64_t i = 0; i < te; i++) {
                const float ga = zt[i * S + j0], gb = zt[i * S + j0 + 1];
                const float *he = hs + i * 32;
                const v8f h0 = ld(he), h1 = ld(he + 8), h2 = ld(he + 16), h3 = ld(he + 24);
                a0 += ga * h0; a1 += ga * h1; a2 += ga * h2; a3 += ga * h3;
                b0 += gb * h0; b1 += gb * h1; b2 += gb * h2; b3 += gb * h3;
            }
            float *ra = gq_neg + neg_slot[j0] * 32, *rb = gq_neg + neg_slot[j0 + 1] * 32;
            if (ra == rb) { /* the same item drawn twice: one row takes both */
                a0 += b0; a1 += b1; a2 += b2; a3 += b3;
            } else {
                st8(rb, ld(rb) + b0); st8(rb + 8, ld(rb + 8) + b1);
                st8(rb + 16, ld(rb + 16) + b2); st8(rb + 24, ld(rb + 24) + b3);
            }
            st8(ra, ld(ra) + a0); st8(ra + 8, ld(ra + 8) + a1);
            st8(ra + 16, ld(ra + 16) + a2); st8(ra + 24, ld(ra + 24) + a3);
        }
        for (int64_t j = j0; j < S; j++) {
            float *gr = gq_neg + neg_slot[j] * d;
            if (d == 32) {
                v8f c0 = ld(gr), c1 = ld(gr + 8), c2 = ld(gr + 16), c3 = ld(gr + 24);
                for (int64_t i = 0; i < te; i++) {
                    const float g = zt[i * S + j];
                    const float *he = hs + i * 32;
                    c0 += g * ld(he); c1 += g * ld(he + 8); c2 += g * ld(he + 16);
                    c3 += g * ld(he + 24);
                }
                st8(gr, c0); st8(gr + 8, c1); st8(gr + 16, c2); st8(gr + 24, c3);
            } else {
                for (int64_t i = 0; i < te; i++) axpy(gr, zt[i * S + j], hs + i * d, d);
            }
        }
        KD_TIC(5);
    }
    /* pass 3: the events' own items */
    for (int64_t e = 0; e < B; e++) {
        const int64_t item = st->items[e];
        if (e + 8 < B) { /* the slot-map entry and row of the own item eight events on */
            const int64_t nx = st->items[e + 8];
            __builtin_prefetch(st->mapQ + nx);
            fetch_row32(st->Q + nx * d);
        }
        axpy(dh + e * d, dzp[e], st->Q + item * d, d);
        if (d == 32)
            slot_axpy32(&sq, item, dzp[e], h + e * 32);
        else
            axpy(sq.g + slot_of(&sq, item) * d, dzp[e], h + e * d, d);
        bias_acc(st, touched, item, dzp[e]);
    }
    KD_TIC(6);
    /* distillation: per-user labels, then item-keyed transition labels */
    for (int64_t j = 0; j < n_rest; j++) st->mark[st->neg[j]] |= (int32_t)1 << j;
    for (int pass = 0; pass < 2; pass++) {
        const Targets *t = pass == 0 ? &st->soft : &st->trans;
        for (int64_t r = 0; r < t->n; r++) {
            const int64_t e = t->rows[r];
            distil(st, t, r, h + e * d, dh + e * d, kz, kpt, kg, krows, qneg, bneg, gneg_b,
                   touched, n_rest, d);
        }
    }

    for (int64_t j = 0; j < n_rest; j++) st->mark[st->neg[j]] = 0;
    /* the negatives' bias gradients, hard loss and distillation together */
    for (int64_t j = 0; j < S; j++) bias_acc(st, touched, st->neg[j], gneg_b[j]);

    KD_TIC(7);
    /* back to the user and context vectors, and the position weights */
    for (int64_t e = 0; e < B; e++) {
        const float *dhe = dh + e * d;
        if (e + 8 < B) { /* the slot map entries of the event eight on (its context rows: no) */
            const int64_t en = e + 8;
            __builtin_prefetch(st->mapP + st->users[en]);
            for (int64_t l = 0; l < L; l++) {
                const int32_t c = st->ctx[en * L + l];
                __builtin_prefetch(st->mapC + (c < 0 ? 0 : c));
            }
        }
        if (d == 32)
            slot_axpy32(&sp, st->users[e], 1.0f, dhe);
        else
            axpy(sp.g + slot_of(&sp, st->users[e]) * d, 1.0f, dhe, d);
        for (int64_t l = 0; l < L; l++) {
            const int32_t c = st->ctx[e * L + l];
            if (c < 0) continue;
            if (d == 32)
                slot_axpy32(&sc, c, st->pos_w[l], dhe);
            else
                axpy(sc.g + slot_of(&sc, c) * d, st->pos_w[l], dhe, d);
            dpos[l] += dot(st->C + (int64_t)c * d, dhe, d);
        }
    }
    KD_TIC(8);
    adagrad(st->P, st->gP, &sp, st->lr, st->l2, d);
    KD_TIC(9);
    adagrad(st->Q, st->gQ, &sq, st->lr, st->l2, d);
    KD_TIC(10);
    adagrad(st->C, st->gC, &sc, st->lr, st->l2, d);
    KD_TIC(11);
    bias_adagrad(st, touched);
    if (st->learn_pos) {
        for (int64_t l = 0; l < L; l++) {
            st->g_pos[l] += dpos[l] * dpos[l];
            st->pos_w[l] -= st->lr * dpos[l] / sqrtf(st->g_pos[l] + KD_EPS);
        }
    }
    /* the row -> slot maps go back to all -1 */
    for (int64_t k = 0; k < sp.n; k++) st->mapP[sp.rows[k]] = -1;
    for (int64_t k = 0; k < sq.n; k++) st->mapQ[sq.rows[k]] = -1;
    for (int64_t k = 0; k < sc.n; k++) st->mapC[sc.rows[k]] = -1;
    free(ar.base);
    KD_TIC(12);
    return 0;
}

/* d = 32 (the default) gets its own copy with constant trip counts: unrolled, in registers. */
#if defined(__x86_64__)
#include <xmmintrin.h>
#endif
int KD_ENTRY(const Step *st) {
#if defined(__x86_64__)
    const unsigned int csr = _mm_getcsr();
    _mm_setcsr(csr | 0x8040); /* flush denormals to zero (FTZ | DAZ) while the step runs */
#endif
    const int rc = st->d == 32 ? step_body(st, 32) : step_body(st, st->d);
#if defined(__x86_64__)
    _mm_setcsr(csr);
#endif
    return rc;
}
