/* Winograd tile transforms for the CPU convolution path (gantk/kernels/winograd.py), fused with the
 * gathering, padding, layout change and overlap-add that torch ops need separate passes for.
 *
 * tiles_in:  out[a*q+b][c][tile] = sum_{r,k} T[a][r] T[b][k] X[n][c][(i0+i)*stride + r][j*stride + k]
 *            for every size x size tile (i0 + i, j), i < th, of image n, tile = (n*th + i)*tw + j. X is x seen
 *            through `pad` rows/columns of reflect or zero padding, and zero past the padded image.
 * tiles_out: the adjoint: Y[n][c][i*stride + u][j*stride + v] += sum_{a,b} S[u][a] S[v][b] in[a*q+b][c][tile]
 *            over all tiles (overlapping where size > stride), then Y's padding folded back onto the
 *            H x W output (reflected positions added to their source, zero padding dropped).
 * tiles_out_rows: tiles_out for the forward's tiles (size == stride: no overlap, no padding) of tile rows
 *            i0 .. i0+th-1 only, written straight into their rows of the output, so that the tiles can be
 *            transformed block by block while the transform domain stays in cache.
 * Both work on VL tiles at a time, one per vector lane (GCC vector extensions: AVX2 with -march=native on
 * x86), the inputs of tiles_in read from de-interleaved rows (column phase s of tile j at [s][j]). The
 * common shapes are compiled with constant sizes (fully unrolled). Return 0, -1 (out of memory) or -2
 * (a tile side over MAXN).
 * fp32, NCHW contiguous; tile rows (in) and planes (out) are spread over OpenMP threads.
 */
#include <stdlib.h>
#include <string.h>

#include "simd.h"

#define MAXN 8 /* largest tile side */
#define AI inline __attribute__((always_inline))

/* Index in [0, n) of padded coordinate P, or -1 where the value is zero. */
static long source(long P, long n, long pad, int reflect) {
    long p = P - pad;
    if (P >= n + 2 * pad) return -1;
    if (p >= 0 && p < n) return p;
    if (!reflect) return -1;
    p = p < 0 ? -p : 2 * (n - 1) - p;
    return p >= 0 && p < n ? p : -1;
}

static long *column_sources(long cols, long n, long pad, int reflect) {
    long *map = malloc(sizeof(long) * (size_t)cols);
    if (map)
        for (long P = 0; P < cols; P++) map[P] = source(P, n, pad, reflect);
    return map;
}

/* dst[s][j] = row[j*stride + s - pad] (through cmap outside the row), j < Jp. */
static AI void deinterleave(const float *row, const long *cmap, long stride, long Jp, long pad, long W, float *dst) {
    const long lo = (pad + stride - 1) / stride;   /* first j whose whole group lies inside the row */
    long hi = (W + pad) / stride;                  /* past the last one */
    if (hi > Jp) hi = Jp;
    if (hi < lo) hi = lo;
    for (long j = 0; j < Jp; j++) {
        if (j == lo) j = hi;
        if (j >= Jp) break;
        for (long s = 0; s < stride; s++) {
            const long src = cmap[j * stride + s];
            dst[s * Jp + j] = src >= 0 ? row[src] : 0.0f;
        }
    }
    const float *base = row - pad;
    for (long j = lo; j < hi; j++)
        for (long s = 0; s < stride; s++) dst[s * Jp + j] = base[j * stride + s];
}

/* sum over r < n of m[r] * x[r * xstep]: one coefficient row of a transform against a column of vectors. */
static AI vf combine(const float *m, const vf *x, long xstep, long n) {
    vf acc = {0};
    for (long r = 0; r < n; r++) acc += m[r] * x[r * xstep];
    return acc;
}

/* One block of VL tiles of tiles_in: X[r][k] lanes = inputs, T (q x size) applied on both sides. */
static AI void in_block(const float *ph, long Jp, long j0, long size, long stride, const float *T, long q, float *dst,
                        long plane, long lanes) {
    vf X[MAXN][MAXN], R[MAXN][MAXN];
    for (long r = 0; r < size; r++)
        for (long k = 0; k < size; k++) X[r][k] = vload(ph + (r * stride + k % stride) * Jp + j0 + k / stride);
    for (long a = 0; a < q; a++) /* along the rows */
        for (long k = 0; k < size; k++) R[a][k] = combine(T + a * size, &X[0][k], MAXN, size);
    for (long a = 0; a < q; a++) /* along the columns */
        for (long b = 0; b < q; b++) vstore(dst + (a * q + b) * plane, combine(T + b * size, R[a], 1, size), lanes);
}

static void in_row(const float *ph, long Jp, long tw, long size, long stride, const float *T, long q, float *dst,
                   long plane) {
    for (long j0 = 0; j0 < tw; j0 += VL) {
        const long lanes = tw - j0 < VL ? tw - j0 : VL;
        if (size == 6 && stride == 4 && q == 6) in_block(ph, Jp, j0, 6, 4, T, 6, dst + j0, plane, lanes);
        else if (size == 6 && stride == 3 && q == 6) in_block(ph, Jp, j0, 6, 3, T, 6, dst + j0, plane, lanes);
        else if (size == 4 && stride == 4 && q == 6) in_block(ph, Jp, j0, 4, 4, T, 6, dst + j0, plane, lanes);
        else if (size == 3 && stride == 3 && q == 6) in_block(ph, Jp, j0, 3, 3, T, 6, dst + j0, plane, lanes);
        else in_block(ph, Jp, j0, size, stride, T, q, dst + j0, plane, lanes);
    }
}

int gantk_tiles_in(const float *x, long N, long C, long H, long W, long size, long stride, long pad,
                   int reflect, const float *T, long q, long i0, long th, long tw, float *out, int threads) {
    if (size > MAXN || q > MAXN) return -2;
    const long ext = (size - 1) / stride;
    const long Jp = (tw + VL - 1) / VL * VL + ext; /* de-interleaved length per column phase */
    const long NT = N * th * tw;
    long *cmap = column_sources(Jp * stride, W, pad, reflect);
    int failed = 0;
    if (!cmap) return -1;
#pragma omp parallel num_threads(threads) reduction(|| : failed)
    {
        float *ph = malloc(sizeof(float) * (size_t)(size * stride * Jp)); /* ph[r][s][j] */
        failed = !ph;
#pragma omp for schedule(static)
        for (long unit = 0; unit < N * C * th; unit++) {
            if (failed) continue;
            const long i = unit % th, c = (unit / th) % C, n = unit / (th * C);
            const float *plane = x + (n * C + c) * H * W;
            for (long r = 0; r < size; r++) { /* gather row i*stride + r, de-interleaved */
                const long p = source((i0 + i) * stride + r, H, pad, reflect);
                float *dst = ph + r * stride * Jp;
                if (p < 0) memset(dst, 0, sizeof(float) * (size_t)(stride * Jp));
                else if (stride == 4) deinterleave(plane + p * W, cmap, 4, Jp, pad, W, dst);
                else if (stride == 3) deinterleave(plane + p * W, cmap, 3, Jp, pad, W, dst);
                else deinterleave(plane + p * W, cmap, stride, Jp, pad, W, dst);
            }
            in_row(ph, Jp, tw, size, stride, T, q, out + c * NT + (n * th + i) * tw, C * NT);
        }
        free(ph);
    }
    free(cmap);
    return failed ? -1 : 0;
}

#if defined(__clang__)
#define SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
typedef int vi __attribute__((vector_size(VL * sizeof(int))));
#define SHUFFLE(a, b, ...) __builtin_shuffle(a, b, (vi){__VA_ARGS__})
#endif

/* dst[4l + v] += (a, b, c, d)[v][l] for the 32 floats from dst. */
static inline void add_interleaved4(float *dst, vf a, vf b, vf c, vf d) {
    const vf ab0 = SHUFFLE(a, b, 0, 8, 1, 9, 2, 10, 3, 11), ab1 = SHUFFLE(a, b, 4, 12, 5, 13, 6, 14, 7, 15);
    const vf cd0 = SHUFFLE(c, d, 0, 8, 1, 9, 2, 10, 3, 11), cd1 = SHUFFLE(c, d, 4, 12, 5, 13, 6, 14, 7, 15);
    const vf o[4] = {SHUFFLE(ab0, cd0, 0, 1, 8, 9, 2, 3, 10, 11), SHUFFLE(ab0, cd0, 4, 5, 12, 13, 6, 7, 14, 15),
                     SHUFFLE(ab1, cd1, 0, 1, 8, 9, 2, 3, 10, 11), SHUFFLE(ab1, cd1, 4, 5, 12, 13, 6, 7, 14, 15)};
    for (int k = 0; k < 4; k++) vstore(dst + k * VL, vload(dst + k * VL) + o[k], VL);
}

/* One block of VL tiles of tiles_out (S: size x q on both sides), added into the padded plane Y from this
 * tile row's first row. (Its first stage is written out rather than by `combine`: measured faster.) */
static AI void out_block(const float *src, long plane, long lanes, const float *S, long q, long size, long stride,
                         float *Y, long Wy, long j0) {
    vf I[MAXN][MAXN], R[MAXN][MAXN];
    for (long a = 0; a < q; a++)
        for (long b = 0; b < q; b++) {
            if (lanes == VL) I[a][b] = vload(src + (a * q + b) * plane);
            else {
                float t[VL] = {0};
                memcpy(t, src + (a * q + b) * plane, sizeof(float) * (size_t)lanes);
                I[a][b] = vload(t);
            }
        }
    for (long a = 0; a < q; a++) /* along the columns */
        for (long v = 0; v < size; v++) {
            vf acc = {0};
            for (long b = 0; b < q; b++) acc += S[v * q + b] * I[a][b];
            R[a][v] = acc;
        }
    for (long u = 0; u < size; u++) { /* along the rows, then scattered into Y */
        float *row = Y + u * Wy + j0 * stride;
        vf Z[MAXN + 3] = {{0}};
        for (long v = 0; v < size; v++) {
            vf acc = {0};
            for (long a = 0; a < q; a++) acc += S[u * q + a] * R[a][v];
            Z[v] = acc;
        }
        if (stride == 4 && lanes == VL) /* lane l of Z[v] goes to 4l + v: 4x8 transposes, then vector adds */
            for (long g = 0; g < size; g += 4) add_interleaved4(row + g, Z[g], Z[g + 1], Z[g + 2], Z[g + 3]);
        else
            for (long v = 0; v < size; v++)
                for (long l = 0; l < lanes; l++) row[l * stride + v] += Z[v][l];
    }
}

static void out_row(const float *src, long plane, long tw, const float *S, long q, long size, long stride, float *Y,
                    long Wy) {
    for (long j0 = 0; j0 < tw; j0 += VL) {
        const long lanes = tw - j0 < VL ? tw - j0 : VL;
        if (size == 4 && stride == 4 && q == 6) out_block(src + j0, plane, lanes, S, 6, 4, 4, Y, Wy, j0);
        else if (size == 6 && stride == 4 && q == 6) out_block(src + j0, plane, lanes, S, 6, 6, 4, Y, Wy, j0);
        else if (size == 3 && stride == 3 && q == 6) out_block(src + j0, plane, lanes, S, 6, 3, 3, Y, Wy, j0);
        else if (size == 6 && stride == 3 && q == 6) out_block(src + j0, plane, lanes, S, 6, 6, 3, Y, Wy, j0);
        else out_block(src + j0, plane, lanes, S, q, size, stride, Y, Wy, j0);
    }
}

int gantk_tiles_out(const float *in, long N, long C, long th, long tw, long q, const float *S, long size,
                    long stride, long pad, int reflect, long H, long W, float *out, int threads) {
    if (size > MAXN || q > MAXN) return -2;
    const long NT = N * th * tw;
    const long Hy = (th - 1) * stride + size, Wy = (tw - 1) * stride + size;
    long *cmap = column_sources(Wy, W, pad, reflect);
    int failed = 0;
    if (!cmap) return -1;
#pragma omp parallel num_threads(threads) reduction(|| : failed)
    {
        float *Y = malloc(sizeof(float) * (size_t)(Hy * Wy + 4 * VL)); /* the padded plane (+ slack) */
        failed = !Y;
#pragma omp for schedule(static)
        for (long unit = 0; unit < N * C; unit++) {
            if (failed) continue;
            const long c = unit % C, n = unit / C;
            memset(Y, 0, sizeof(float) * (size_t)(Hy * Wy + 4 * VL));
            for (long i = 0; i < th; i++)
                out_row(in + c * NT + (n * th + i) * tw, C * NT, tw, S, q, size, stride, Y + i * stride * Wy, Wy);
            float *plane = out + (n * C + c) * H * W; /* fold the padding back */
            memset(plane, 0, sizeof(float) * (size_t)(H * W));
            const long inner = W < Wy - pad ? W : Wy - pad; /* columns that land on themselves */
            for (long P = 0; P < Hy; P++) {
                const long p = source(P, H, pad, reflect);
                if (p < 0) continue;
                const float *row = Y + P * Wy;
                float *dst = plane + p * W;
                for (long e = 0; e < inner; e++) dst[e] += row[pad + e];
                for (long Pc = 0; Pc < Wy; Pc = Pc + 1 == pad ? pad + inner : Pc + 1) /* the border columns */
                    if ((Pc < pad || Pc >= pad + inner) && cmap[Pc] >= 0) dst[cmap[Pc]] += row[Pc];
            }
        }
        free(Y);
    }
    free(cmap);
    return failed ? -1 : 0;
}

int gantk_tiles_out_rows(const float *in, long N, long C, long th, long tw, long q, const float *S, long size,
                         long i0, long H, long W, float *out, int threads) {
    if (size > MAXN || q > MAXN) return -2;
    const long NT = N * th * tw, Wy = tw * size;
    const long cols = W < Wy ? W : Wy;
    int failed = 0;
#pragma omp parallel num_threads(threads) reduction(|| : failed)
    {
        float *Y = malloc(sizeof(float) * (size_t)(size * Wy + 4 * VL)); /* one tile row (+ slack) */
        failed = !Y;
#pragma omp for schedule(static)
        for (long unit = 0; unit < N * C * th; unit++) {
            if (failed) continue;
            const long i = unit % th, c = (unit / th) % C, n = unit / (th * C);
            const long row0 = (i0 + i) * size;
            memset(Y, 0, sizeof(float) * (size_t)(size * Wy + 4 * VL));
            out_row(in + c * NT + (n * th + i) * tw, C * NT, tw, S, q, size, size, Y, Wy);
            for (long u = 0; u < size && row0 + u < H; u++)
                memcpy(out + ((n * C + c) * H + row0 + u) * W, Y + u * Wy, sizeof(float) * (size_t)cols);
        }
        free(Y);
    }
    return failed ? -1 : 0;
}

/* The weight transform straight into the packed layout of gemm.c: out[p*n + q][o/8][c][o%8] =
 * sum_{r,s} G[p][r] G[q][s] w[o][c][r][s] for an O x I x k x k weight (O a multiple of 8), G n x k: one vector
 * lane per output channel of a group of 8. (torch's mm of the 36 x 9 G-kron-G by the weight ran at a
 * fraction of memory speed, and then U had to be reordered.) */
#if VL != 8
#error "gantk_weight_packed fills 8 lanes, the rows gemm.c interleaves"
#endif
int gantk_weight_packed(const float *w, long O, long I, long k, const float *G, long n, float *out, int threads) {
    if (k > MAXN || n > MAXN) return -2;
    const long groups = O / VL, kk = k * k;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long unit = 0; unit < groups * I; unit++) {
        const long g = unit / I, c = unit % I;
        vf X[MAXN][MAXN], R[MAXN][MAXN];
        for (long r = 0; r < k; r++)
            for (long s = 0; s < k; s++)
                for (long l = 0; l < VL; l++) X[r][s][l] = w[((g * VL + l) * I + c) * kk + r * k + s];
        for (long p = 0; p < n; p++)
            for (long s = 0; s < k; s++) R[p][s] = combine(G + p * k, &X[0][s], MAXN, k);
        for (long p = 0; p < n; p++)
            for (long q = 0; q < n; q++)
                vstore(out + (((p * n + q) * groups + g) * I + c) * VL, combine(G + q * k, R[p], 1, k), VL);
    }
    return 0;
}
