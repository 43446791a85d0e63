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
#endif
