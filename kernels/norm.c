/* InstanceNorm (+ affine) + activation (+ residual) on the CPU, forward and backward: the C counterpart of
 * gantk/kernels/instance_norm.py's torch path, with the same outputs and fp32 statistics (mean, 1/std).
 * fp32, NCHW contiguous; each (n, c) plane is one unit of work for OpenMP. The forward reads the plane
 * twice for the statistics (in cache for the generators' planes) and once for the output; the backward
 * once for its two sums (keeping dz), once for dx. */
#include <math.h>
#include <stdlib.h>

#include "simd.h"

enum { NONE = 0, RELU = 1, LEAKY = 2, TANH = 3 };

static inline float act(float z, int a, float slope) {
    return a == RELU ? (z > 0 ? z : 0.0f) : a == LEAKY ? (z > 0 ? z : z * slope) : a == TANH ? tanhf(z) : z;
}


/* sum of (p - shift)^2 (square), of p * q (q given) or of p, over n floats: VL-lane partial sums over runs of
 * RUN floats (a float reduction does not vectorise otherwise), each run's total added in double. One running
 * float sum per lane over a whole 1024 px plane (131k terms per lane) put errors of ~1e-4 into the
 * generators' outputs, and made the 1024 px parity depend on which rounding the run happened to get. */
#define RUN 512
static float sum_of(const float *p, const float *q, long n, float shift, int square) {
    double total = 0;
    long e = 0;
    while (e + VL <= n) {
        vf acc = {0};
        const long end = n - e < RUN ? e + (n - e) / VL * VL : e + RUN;
        for (; e < end; e += VL) {
            vf v = vload(p + e) - shift;
            acc += square ? v * v : q ? v * vload(q + e) : v;
        }
        for (long l = 0; l < VL; l++) total += acc[l];
    }
    for (; e < n; e++) {
        const float v = p[e] - shift;
        total += square ? v * v : q ? v * q[e] : v;
    }
    return (float)total;
}

int gantk_in_fwd(const float *x, const float *w, const float *b, const float *res, long N, long C, long HW, float eps,
                 int a, float slope, float *y, float *mean, float *rstd, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long u = 0; u < N * C; u++) {
        const float *xp = x + u * HW;
        const float mu = sum_of(xp, NULL, HW, 0.0f, 0) / (float)HW;
        const float r = 1.0f / sqrtf(sum_of(xp, NULL, HW, mu, 1) / (float)HW + eps);
        const float scale = r * (w ? w[u % C] : 1.0f), shift = (b ? b[u % C] : 0.0f) - mu * scale;
        float *yp = y + u * HW;
        const float *rp = res ? res + u * HW : NULL;
        if (rp)
            for (long e = 0; e < HW; e++) yp[e] = act(xp[e] * scale + shift, a, slope) + rp[e];
        else
            for (long e = 0; e < HW; e++) yp[e] = act(xp[e] * scale + shift, a, slope);
        mean[u] = mu;
        rstd[u] = r;
    }
    return 0;
}

int gantk_in_bwd(const float *dy, const float *x, const float *w, const float *b, const float *mean,
                 const float *rstd, long N, long C, long HW, int a, float slope, float *dx, float *sdz, float *sdzx,
                 int threads) {
    int failed = 0;
#pragma omp parallel num_threads(threads) reduction(|| : failed)
    {
        float *dz = malloc(sizeof(float) * (size_t)HW), *xh = malloc(sizeof(float) * (size_t)HW);
        failed = !dz || !xh;
#pragma omp for schedule(static)
        for (long u = 0; u < N * C; u++) {
            if (failed) continue;
            const float *xp = x + u * HW, *gp = dy + u * HW;
            const float mu = mean[u], r = rstd[u], wc = w ? w[u % C] : 1.0f, bc = b ? b[u % C] : 0.0f;
            for (long e = 0; e < HW; e++) xh[e] = (xp[e] - mu) * r;
            switch (a) { /* one loop per activation, so that each vectorises */
            case RELU: for (long e = 0; e < HW; e++) dz[e] = xh[e] * wc + bc > 0 ? gp[e] : 0.0f; break;
            case LEAKY: for (long e = 0; e < HW; e++) dz[e] = xh[e] * wc + bc > 0 ? gp[e] : gp[e] * slope; break;
            case TANH:
                for (long e = 0; e < HW; e++) {
                    const float t = tanhf(xh[e] * wc + bc);
                    dz[e] = gp[e] * (1 - t * t);
                }
                break;
            default: for (long e = 0; e < HW; e++) dz[e] = gp[e];
            }
            const float s1 = sum_of(dz, NULL, HW, 0.0f, 0), s2 = sum_of(dz, xh, HW, 0.0f, 0);
            const float k = r * wc, k1 = k * s1 / (float)HW, k2 = k * s2 / (float)HW;
            float *out = dx + u * HW;
            for (long e = 0; e < HW; e++) out[e] = k * dz[e] - k1 - xh[e] * k2;
            sdz[u] = s1;
            sdzx[u] = s2;
        }
        free(dz);
        free(xh);
    }
    return failed ? -1 : 0;
}
