/* The Winograd forward's batched GEMM (gantk/kernels/winograd.py): for each of P points,
 *     C[p] (O x T) = A[p] (O x K) @ B[p] (K x T),
 * with A packed by the caller as [p][O/MR][K][MR] (MR consecutive rows interleaved) and B, C row-major.
 * Register blocking: an MR x NR block of C (MR = 8 rows, NR = 2 vectors of 16 floats: 16 accumulators)
 * sums K rank-1 updates, one broadcast of A and two vector loads of B per row of A. B's NR-column panel is
 * first copied to a contiguous buffer: B's rows lie T floats apart, which at T = 1024 maps every row to the
 * same L1 cache set. Points are spread over OpenMP threads. GCC vector extensions, so it compiles anywhere;
 * it is only fast with 32 vector registers of 16 floats (AVX-512): on a 2-core Zen 4, 182 GFLOP/s against
 * torch's bmm's (MKL) 164 (benchmarks/cpu_limits.py). Returns 0, or -1 (out of memory).
 */
#include <stdlib.h>
#include <string.h>

#include "simd.h"

#define MR 8
#define NW 16 /* floats per vector */
#define NR (2 * NW)
#define KC 64  /* rank-1 updates per partial sum */

/* C (MR x NR, row stride ldc; its first `cols` columns) = Ap (K x MR) . Bp (K x NR), summed in runs of KC
 * rank-1 updates whose sums are then added (a serial sum over all K doubled the rounding error of torch's). */
static void block(const float *restrict Ap, const float *restrict Bp, long K, float *restrict C, long ldc, long cols) {
    v16 s0[MR] = {{0}}, s1[MR] = {{0}};
    for (long k0 = 0; k0 < K; k0 += KC) {
        const long k1 = K - k0 < KC ? K : k0 + KC;
        v16 c0[MR] = {{0}}, c1[MR] = {{0}};
        for (long k = k0; k < k1; k++) {
            const v16 b0 = load16(Bp + k * NR), b1 = load16(Bp + k * NR + NW);
            for (int i = 0; i < MR; i++) {
                const float a = Ap[k * MR + i];
                c0[i] += a * b0;
                c1[i] += a * b1;
            }
        }
        for (int i = 0; i < MR; i++) {
            s0[i] += c0[i];
            s1[i] += c1[i];
        }
    }
    for (int i = 0; i < MR; i++) {
        float row[NR];
        memcpy(row, &s0[i], sizeof s0[i]);
        memcpy(row + NW, &s1[i], sizeof s1[i]);
        memcpy(C + i * ldc, row, sizeof(float) * (size_t)cols);
    }
}

int gantk_gemm(const float *A, const float *B, float *C, long P, long O, long K, long T, int threads) {
    int failed = 0;
#pragma omp parallel num_threads(threads) reduction(|| : failed)
    {
        float *Bp = malloc(sizeof(float) * (size_t)(K * NR));
        failed = !Bp;
#pragma omp for schedule(static)
        for (long p = 0; p < P; p++) {
            if (failed) continue;
            const float *a = A + p * O * K, *b = B + p * K * T;
            float *c = C + p * O * T;
            for (long t0 = 0; t0 < T; t0 += NR) {
                const long cols = T - t0 < NR ? T - t0 : NR;
                for (long k = 0; k < K; k++) { /* the panel, zero past T */
                    memcpy(Bp + k * NR, b + k * T + t0, sizeof(float) * (size_t)cols);
                    memset(Bp + k * NR + cols, 0, sizeof(float) * (size_t)(NR - cols));
                }
                for (long o = 0; o < O; o += MR) block(a + o * K, Bp, K, c + o * T + t0, T, cols);
            }
        }
        free(Bp);
    }
    return failed ? -1 : 0;
}
