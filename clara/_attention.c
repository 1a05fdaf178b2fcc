/* Fused float32 attention for prompt passes on MLX's Linux CPU backend.
 *
 * MLX's CPU attention materialises every score: a matmul, then the mask, max, exp, sum and
 * divide as separate passes over (heads x rows x keys) floats, then a second matmul. For a
 * 1325-token text prompt that was 64% of the prefill here (bench/bench_burst.py). This computes
 * the same softmax(q k^T * scale + mask) v one tile of rows at a time with a running max and
 * sum (the "online softmax" of FlashAttention): each key block is read once per tile of rows,
 * fully masked key blocks (the causal upper triangle) are skipped, and nothing of size
 * rows x keys is ever written.
 *
 * Every output row is the same arithmetic whatever the batch, the other rows of the pass and
 * how a prompt is cut into passes: keys are visited in blocks of KB from key 0, and a block a
 * row may not see changes nothing (p = 0, the running max unchanged). So a prompt prefilled
 * alone or beside others, whole or in chunks, gets the same bits.
 *
 * Built into the same library as _thinmm.c (clara/_blas.py), whose helper threads share out
 * the (batch, kv head, row tile) blocks.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef void (*block_fn)(const void *ctx, int b0, int b1);
void clara_parallel_blocks(block_fn fn, const void *ctx, int blocks, int wide);

typedef float v16 __attribute__((vector_size(64)));
typedef int i16v __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4), may_alias)); /* unaligned */

enum { KB = 64, MAX_D = 256, GROUP = 4 };

/* where m: a, else b (m from a vector comparison: all bits set or none) */
static inline v16 sel(i16v m, v16 a, v16 b) { return (v16)(((i16v)a & m) | ((i16v)b & ~m)); }

/* e^x for x <= 0 (scores minus their running max), 16 at a time: x = n ln2 + r, |r| <= ln2/2,
 * e^r by Cephes' degree-6 polynomial for expf (about 1 ulp), 2^n through the exponent bits.
 * Below -87.3 (e^x under float's smallest normal) it returns e^-87.3, not 0. */
static inline v16 exp16(v16 x) {
  const v16 lo = (v16){0} - 87.3f;
  x = sel(x < lo, lo, x);
  v16 t = x * 1.44269504088896341f + 0.5f; /* n = floor(x / ln2 + 1/2): the nearest */
  i16v n = __builtin_convertvector(t, i16v); /* rounds toward zero ... */
  v16 nf = __builtin_convertvector(n, v16);
  n += nf > t; /* ... so one less where t < 0 is not whole (a true comparison is -1) */
  nf = __builtin_convertvector(n, v16);
  v16 r = x - nf * 0.693359375f - nf * -2.12194440e-4f;
  v16 p = (v16){0} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  return p * (v16)((n + 127) << 23);
}

static inline v16 load16(const float *p) { return *(const v16u *)p; }

static inline void store16(float *p, v16 v) { *(v16u *)p = v; }

typedef unsigned char u8x16 __attribute__((vector_size(16), aligned(1), may_alias));

typedef struct {
  int B, H, Hk, T, S, D, rep, tile; /* tile: query positions per block (rows: rep x tile) */
  const float *q, *kt, *v;          /* kt: the keys transposed, (B, Hk, D, >= S rounded to KB) */
  long qsb, qsh, qst, ksb, ksh, ksd, vsb, vsh, vss;
  const unsigned char *mask; /* nonzero: the key is seen; NULL: no mask array */
  long msb, msh, mst;
  int causal; /* 1: row t sees keys j <= t + offset */
  int offset;
  float scale;
  float *out; /* (B, T, H, D), contiguous */
} attn_args;

static inline float hmax(v16 v) {
  float t = v[0];
  for (int i = 1; i < 16; i++) t = v[i] > t ? v[i] : t;
  return t;
}

static inline float hsum(v16 v) {
  float t = 0.0f;
  for (int i = 0; i < 16; i++) t += v[i];
  return t;
}

/* One block: batch b, kv head g, query positions [t0, t0 + tile): the rep query heads of g.
 * Rows go GROUP at a time through each key block of KB: their scores (GROUP x KB, in
 * registers), the mask, the running max and sum, then p @ V into their accumulators. */
static void attn_block(const attn_args *a, int b, int g, int t0) {
  int D = a->D, S = a->S, rep = a->rep, tn = a->T - t0 < a->tile ? a->T - t0 : a->tile;
  int rows = rep * tn;
  float *m = malloc(sizeof(float) * (size_t)rows * (2 + D));
  if (m == NULL) abort();
  float *l = m + rows, *o = l + rows;
  for (int r = 0; r < rows; r++) m[r] = -INFINITY, l[r] = 0.0f;
  memset(o, 0, sizeof(float) * (size_t)rows * D);
  const float *kt = a->kt + (long)b * a->ksb + (long)g * a->ksh;
  const float *vbase = a->v + (long)b * a->vsb + (long)g * a->vsh;
  int last = S - 1; /* the last key any row of the block may see */
  if (a->causal && t0 + tn - 1 + a->offset < last) last = t0 + tn - 1 + a->offset;
  const i16v iota = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  const v16 neg = (v16){0} - INFINITY;
  float p[GROUP][KB] __attribute__((aligned(64)));
  for (int j0 = 0; j0 <= last; j0 += KB) {
    int kn = S - j0 < KB ? S - j0 : KB;
    for (int r0 = 0; r0 < rows; r0 += GROUP) {
      int rn = rows - r0 < GROUP ? rows - r0 : GROUP;
      int see[GROUP]; /* keys [j0, j0 + see) pass the causal limit */
      int any = 0;
      const float *qr[GROUP];
      for (int i = 0; i < GROUP; i++) {
        int r = r0 + (i < rn ? i : 0), h = g * rep + r / tn, t = t0 + r % tn;
        qr[i] = a->q + (long)b * a->qsb + (long)h * a->qsh + (long)t * a->qst;
        int lim = a->causal ? t + a->offset - j0 + 1 : kn;
        see[i] = i >= rn || lim < 0 ? 0 : lim > kn ? kn : lim;
        any |= see[i] > 0;
      }
      if (!any) continue;
      v16 acc[GROUP][4];
      for (int i = 0; i < GROUP; i++)
        for (int c = 0; c < 4; c++) acc[i][c] = (v16){0};
      const float *kp = kt + j0;
      for (int d = 0; d < D; d++, kp += a->ksd) {
        v16 k0 = load16(kp), k1 = load16(kp + 16), k2 = load16(kp + 32), k3 = load16(kp + 48);
        for (int i = 0; i < GROUP; i++) {
          float x = qr[i][d];
          acc[i][0] += x * k0;
          acc[i][1] += x * k1;
          acc[i][2] += x * k2;
          acc[i][3] += x * k3;
        }
      }
      int live[GROUP];
      for (int i = 0; i < GROUP; i++) {
        int r = r0 + i;
        live[i] = 0;
        if (see[i] == 0) {
          memset(p[i], 0, sizeof p[i]);
          continue;
        }
        int h = g * rep + r / tn, t = t0 + r % tn;
        const unsigned char *mrow =
            a->mask ? a->mask + (long)b * a->msb + (long)h * a->msh + (long)t * a->mst + j0 : NULL;
        v16 x[4], top = neg;
        for (int c = 0; c < 4; c++) {
          i16v keep = iota + 16 * c < see[i];
          if (mrow != NULL) {
            i16v bytes;
            if (16 * c + 16 <= kn) {
              bytes = __builtin_convertvector(*(const u8x16 *)(mrow + 16 * c), i16v);
            } else {
              for (int e = 0; e < 16; e++) bytes[e] = 16 * c + e < kn ? mrow[16 * c + e] : 0;
            }
            keep &= bytes != 0;
          }
          x[c] = sel(keep, acc[i][c] * a->scale, neg);
          top = sel(x[c] > top, x[c], top);
        }
        float mx = hmax(top);
        if (mx == -INFINITY) { /* nothing seen in this block */
          memset(p[i], 0, sizeof p[i]);
          continue;
        }
        live[i] = 1;
        float mnew = m[r] > mx ? m[r] : mx;
        float corr = m[r] == -INFINITY ? 0.0f : expf(m[r] - mnew);
        m[r] = mnew;
        v16 sum = {0};
        for (int c = 0; c < 4; c++) {
          v16 e = exp16(x[c] - mnew);
          e = sel(x[c] == neg, (v16){0}, e);
          store16(&p[i][16 * c], e);
          sum += e;
        }
        l[r] = l[r] * corr + hsum(sum);
        float *orow = o + (long)r * D;
        for (int d = 0; d < D; d += 16) store16(orow + d, load16(orow + d) * corr);
      }
      /* o[rows] += p @ V[j0 : j0 + kn], 64 columns of D at a time */
      for (int d0 = 0; d0 < D; d0 += 64) {
        v16 y[GROUP][4];
        for (int i = 0; i < GROUP; i++)
          for (int c = 0; c < 4; c++)
            y[i][c] = live[i] ? load16(o + (long)(r0 + i) * D + d0 + 16 * c) : (v16){0};
        const float *vp = vbase + (long)j0 * a->vss + d0;
        for (int j = 0; j < kn; j++, vp += a->vss) {
          v16 v0 = load16(vp), v1 = load16(vp + 16), v2 = load16(vp + 32), v3 = load16(vp + 48);
          for (int i = 0; i < GROUP; i++) {
            float w = p[i][j];
            y[i][0] += w * v0;
            y[i][1] += w * v1;
            y[i][2] += w * v2;
            y[i][3] += w * v3;
          }
        }
        for (int i = 0; i < GROUP; i++)
          if (live[i])
            for (int c = 0; c < 4; c++) store16(o + (long)(r0 + i) * D + d0 + 16 * c, y[i][c]);
      }
    }
  }
  for (int r = 0; r < rows; r++) {
    int h = g * rep + r / tn, t = t0 + r % tn;
    float *dst = a->out + (((long)b * a->T + t) * a->H + h) * D;
    float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
    for (int d = 0; d < D; d++) dst[d] = o[(long)r * D + d] * inv;
  }
  free(m);
}

static void attn_blocks(const void *ctx, int b0, int b1) {
  const attn_args *a = ctx;
  int tiles = (a->T + a->tile - 1) / a->tile;
  for (int x = b0; x < b1; x++) {
    int tb = x % tiles, bg = x / tiles;
    attn_block(a, bg / a->Hk, bg % a->Hk, tb * a->tile);
  }
}

/* softmax(q k^T * scale + mask) v for q (B, H, T, D) and v (B, Hk, S, D), each given by its
 * strides in floats (the last axis contiguous), and the keys given transposed: kt (B, Hk, D,
 * S') with S' >= S rounded up to a multiple of KB (64; the columns past S are read, unused).
 * mask: NULL or a byte array read at b * msb + h * msh + t * mst + j (strides 0 where it
 * broadcasts); with causal != 0 row t also sees only keys j <= t + offset. Writes out
 * (B, T, H, D). A row that sees no key gets zeros. Returns 0 (nothing done: the caller keeps
 * MLX's path) unless D is a multiple of 64 up to MAX_D and H a multiple of Hk. */
int clara_attention(int B, int H, int Hk, int T, int S, int D, const float *q, long qsb,
                    long qsh, long qst, const float *kt, long ksb, long ksh, long ksd,
                    const float *v, long vsb, long vsh, long vss, const unsigned char *mask,
                    long msb, long msh, long mst, int causal, int offset, float scale,
                    float *out) {
  if (D % 64 != 0 || D > MAX_D || Hk <= 0 || H % Hk != 0 || T <= 0 || S <= 0 ||
      ksd < (S + KB - 1) / KB * KB)
    return 0;
  attn_args a = {B, H, Hk, T, S, D, H / Hk, 0, q, kt, v, qsb, qsh, qst, ksb, ksh, ksd,
                 vsb, vsh, vss, mask, msb, msh, mst, causal, offset, scale, out};
  a.tile = 64 / a.rep > 0 ? 64 / a.rep : 1; /* about 64 rows a block */
  if (a.tile > T) a.tile = T;
  int tiles = (T + a.tile - 1) / a.tile;
  clara_parallel_blocks(attn_blocks, &a, B * Hk * tiles, 1);
  return 1;
}
