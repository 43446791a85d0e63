/* Direct stride-1 convolution for layers with few output channels (gantk/kernels/shift_conv.py): the
 * generators' last 7x7 conv to RGB and PatchGAN's last conv to one logit. With at most MAXO output channels
 * a GEMM has too few rows to keep a CPU busy; here the vectors run along output pixels instead: a segment
 * of NV vectors on each of ROWS output rows holds ROWS x O x NV accumulators, and each input vector, loaded
 * once, is multiplied by the broadcast weights of every (row, channel) it reaches (two rows halve the loads
 * per multiply-add: 66 -> 81 GFLOP/s at 256 px, 2 threads). Sums run over each input channel's taps first,
 * then are added across channels (one serial sum over all C*k*k terms had twice the rounding error). Input
 * already padded, (N, C, Hp, Wp); weight laid out [C][k][k][O]; output (N, O, Ho, Wo) with the given sample
 * and channel strides. Row pairs are spread over OpenMP threads. Returns 0 or -2 (O > MAXO).
 */
#include "simd.h"

/* 16 floats per vector where AVX-512 gives 32 such registers (twice the multiply-adds per input load and
 * per broadcast weight of 8-float vectors: 64->3 7x7 at 256 px, 2 threads, 16.1 -> 13.6 ms, median of 21
 * paired calls); 8 elsewhere. */
#ifdef __AVX512F__
#define CL 16
typedef v16 cv;
#define cload load16
#else
#define CL VL
typedef vf cv;
#define cload vload
#endif

static inline void cstore(float *p, cv v) { memcpy(p, &v, sizeof v); }

#define MAXO 4
#define NV 2 /* vectors per segment */
#define ROWS 2 /* output rows per segment */

/* acc[t][o][v] = the convolution at output rows t = 0 .. R-1 below `in`'s row, pixels x .. x + nv*CL - 1 (in
 * pointing at (c 0, the first row, column x) of the padded input). The R rows share each input vector load. */
static inline __attribute__((always_inline)) void segment(const float *restrict in, long C, long plane, long Wp,
                                                          long k, const float *restrict w, const int O, const int R,
                                                          const int nv, cv acc[ROWS][MAXO][NV]) {
    for (int t = 0; t < R; t++)
        for (int o = 0; o < O; o++)
            for (int v = 0; v < nv; v++) acc[t][o][v] = (cv){0};
    for (long c = 0; c < C; c++) {
        cv part[ROWS][MAXO][NV] = {{{{0}}}};
        for (long j = 0; j < k + R - 1; j++) {
            const float *row = in + c * plane + j * Wp;
            for (long b = 0; b < k; b++) {
                cv x[NV];
                for (int v = 0; v < nv; v++) x[v] = cload(row + b + v * CL);
                for (int t = 0; t < R; t++) {
                    if (j - t < 0 || j - t >= k) continue;
                    const float *wt = w + ((c * k + j - t) * k + b) * O;
                    for (int o = 0; o < O; o++)
                        for (int v = 0; v < nv; v++) part[t][o][v] += wt[o] * x[v];
                }
            }
        }
        for (int t = 0; t < R; t++)
            for (int o = 0; o < O; o++)
                for (int v = 0; v < nv; v++) acc[t][o][v] += part[t][o][v];
    }
}

/* R output rows of O channels (out points at channel 0, the first row, column 0; channel stride so). */
static inline __attribute__((always_inline)) void output_rows(const float *in, long C, long plane, long Wp, long k,
                                                              const float *w, const float *bias, const int O,
                                                              const int R, float *out, long so) {
    const long Wo = Wp - k + 1;
    cv acc[ROWS][MAXO][NV];
    long x = 0;
    for (; x + NV * CL <= Wo; x += NV * CL) {
        segment(in + x, C, plane, Wp, k, w, O, R, NV, acc);
        for (int t = 0; t < R; t++)
            for (int o = 0; o < O; o++)
                for (int v = 0; v < NV; v++)
                    cstore(out + o * so + t * Wo + x + v * CL, acc[t][o][v] + (bias ? bias[o] : 0));
    }
    for (; x + CL <= Wo; x += CL) {
        segment(in + x, C, plane, Wp, k, w, O, R, 1, acc);
        for (int t = 0; t < R; t++)
            for (int o = 0; o < O; o++) cstore(out + o * so + t * Wo + x, acc[t][o][0] + (bias ? bias[o] : 0));
    }
    for (; x < Wo; x++) /* the last < CL pixels, one at a time */
        for (int t = 0; t < R; t++)
            for (int o = 0; o < O; o++) {
                float s = 0;
                for (long c = 0; c < C; c++) {
                    float part = 0;
                    for (long a = 0; a < k; a++)
                        for (long b = 0; b < k; b++)
                            part += in[c * plane + (t + a) * Wp + x + b] * w[((c * k + a) * k + b) * O + o];
                    s += part;
                }
                out[o * so + t * Wo + x] = s + (bias ? bias[o] : 0);
            }
}

int gantk_conv_few(const float *x, long N, long C, long Hp, long Wp, const float *w, long O, long k,
                   const float *bias, float *y, long sn, long so, int threads) {
    if (O < 1 || O > MAXO) return -2;
    const long Ho = Hp - k + 1, Wo = Wp - k + 1, plane = Hp * Wp;
    const long pairs = (Ho + ROWS - 1) / ROWS;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (long nr = 0; nr < N * pairs; nr++) {
        const long n = nr / pairs, r = nr % pairs * ROWS;
        const float *in = x + n * C * plane + r * Wp;
        float *out = y + n * sn + r * Wo;
        const int R = Ho - r < ROWS ? 1 : ROWS;
#define ROWS_OF(O) (R == ROWS ? output_rows(in, C, plane, Wp, k, w, bias, O, ROWS, out, so) \
                              : output_rows(in, C, plane, Wp, k, w, bias, O, 1, out, so))
        switch (O) { /* O and R known at compile time in each: the accumulators stay in registers */
        case 1: ROWS_OF(1); break;
        case 2: ROWS_OF(2); break;
        case 3: ROWS_OF(3); break;
        default: ROWS_OF(4); break;
        }
    }
    return 0;
}

/* The col2im step of a transposed convolution computed as a GEMM (gantk/kernels/bands.py): Z (k, k, O, rows, W)
 * holds, for input rows ih0 .. ih0+rows-1 of one sample, every tap's contribution W[:, :, kh, kw]^T x; output
 * pixel (oh, ow) sums Z[kh][kw][o][ih][iw] over oh = s*ih - p + kh, ow = s*iw - p + kw. Fills the output rows
 * these input rows reach (all rows from 0 when ih0 is 0, through Ho-1 when the rows end at H): a row that earlier
 * input rows also reach gets the sums added (the previous call wrote it), any other row bias + sums.
 * y: (O, Ho, Wo) with channel stride so. Rows are spread over OpenMP threads. */
int gantk_col2im(const float *Z, long O, long k, long s, long p, long ih0, long rows, long H, long W,
                 const float *bias, float *y, long Ho, long Wo, long so, int threads) {
    long lo = ih0 == 0 ? 0 : s * ih0 - p, hi = ih0 + rows == H ? Ho : s * (ih0 + rows - 1) - p + k;
    lo = lo < 0 ? 0 : lo;
    hi = hi > Ho ? Ho : hi;
    const long plane = rows * W, tap = O * plane;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (long or = 0; or < O * (hi - lo); or++) {
        const long o = or / (hi - lo), oh = lo + or % (hi - lo);
        float *out = y + o * so + oh * Wo;
        const long reach = oh + p - k + 1, first = reach <= 0 ? 0 : (reach + s - 1) / s; /* the first ih reaching oh */
        if (first >= ih0)
            for (long ow = 0; ow < Wo; ow++) out[ow] = bias ? bias[o] : 0;
        for (long kh = 0; kh < k; kh++) {
            const long t = oh + p - kh, ih = t / s;
            if (t < 0 || t % s || ih < ih0 || ih >= ih0 + rows) continue;
            for (long kw = 0; kw < k; kw++) {
                const float *z = Z + (kh * k + kw) * tap + o * plane + (ih - ih0) * W;
                long iw0 = 0, iw1 = W; /* 0 <= s*iw - p + kw < Wo */
                while (iw0 < W && s * iw0 - p + kw < 0) iw0++;
                while (iw1 > iw0 && s * (iw1 - 1) - p + kw >= Wo) iw1--;
                float *dst = out + s * iw0 - p + kw;
                if (s == 2) /* the upsampling's stride as a constant: faster than s's loop (median 6.4 vs
                             * 7.9 ms, six runs of a 512 px layer's col2im) */
                    for (long iw = iw0; iw < iw1; iw++) dst[2 * (iw - iw0)] += z[iw];
                else
                    for (long iw = iw0; iw < iw1; iw++) dst[s * (iw - iw0)] += z[iw];
            }
        }
    }
    return 0;
}
