/* The step with AVX-512 (F, VL, BW, DQ) and FMA (x86-64 with GCC or Clang); _kernel.c calls it
 * only where the CPU has them. _kernel_body.h gives the sampled softmax's products 16-float
 * vectors here (KD_WIDE). Elsewhere this file builds the baseline step again under this name. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,avx512f,avx512vl,avx512bw,avx512dq"))), apply_to = function)
#else
#pragma GCC target("avx2,fma,avx512f,avx512vl,avx512bw,avx512dq")
#endif
#endif
#define KD_ENTRY kd_run_avx512
#include "_kernel_body.h"
#if defined(__x86_64__) && defined(__clang__)
#pragma clang attribute pop
#endif
