/* The vector type the CPU kernels compute with: VL floats (GCC/clang vector extensions; AVX2 registers
 * with -march=native on x86), and unaligned loads/stores of it. */
#ifndef GANTK_SIMD_H
#define GANTK_SIMD_H
#include <string.h>

#define VL 8
typedef float vf __attribute__((vector_size(VL * sizeof(float))));

static inline vf vload(const float *p) {
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* The first `lanes` floats of v to p. */
static inline void vstore(float *p, vf v, long lanes) {
    if (lanes == VL) memcpy(p, &v, sizeof v);
    else memcpy(p, &v, sizeof(float) * (size_t)lanes);
}

/* 16 floats: the vector of the kernels that want AVX-512's 32 registers of that width (elsewhere it compiles
 * to pairs of 8-float operations; GCC then warns that such a return value's ABI differs, which does not
 * matter for a static inline function). */
typedef float v16 __attribute__((vector_size(16 * sizeof(float))));

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
static inline v16 load16(const float *p) {
    v16 v;
    memcpy(&v, p, sizeof v);
    return v;
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif
