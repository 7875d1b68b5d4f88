/* The step with AVX2 and FMA (x86-64 with GCC or Clang); _kernel.c calls it only where the CPU
 * has both. Elsewhere this file builds the baseline step again under the AVX2 name. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx2,fma")
#endif
#endif
#define KD_ENTRY kd_run_avx2
#include "_kernel_body.h"
#if defined(__x86_64__) && defined(__clang__)
#pragma clang attribute pop
#endif
