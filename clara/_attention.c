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

/* The kernels' vectors: VW floats, the CPU's register width (16 with AVX-512, 8 with AVX2).
 * 16-float vectors on an AVX2-only CPU are pairs of registers, and AVX-512's tiles of them
 * spilled: a 1325-position causal prompt's attention (9 heads of 64) took 4.5x the time of
 * MLX's ops there, 0.2x with 8-float vectors in 6 x 2 tiles, and a decode step's rows 2-3x
 * against 0.3-0.9x (one-off, 2026-12-04, AMD EPYC without AVX-512). With 16 lanes the
 * arithmetic is what it was before 8 were possible, bit for bit. Tiles: GROUP rows x CH vectors
 * of keys (scores) or of head columns (p @ V), accumulated in registers. */
#ifndef CLARA_VW
#if defined(__AVX512F__) || !defined(__AVX2__)
#define CLARA_VW 16
#else
#define CLARA_VW 8
#endif
#endif
#define VW CLARA_VW
#if VW != 8 && VW != 16
#error "CLARA_VW is 8 or 16"
#endif
#if VW == 16
enum { GROUP = 4, CH = 4 }; /* 16 of the 32 registers */
#else
enum { GROUP = 6, CH = 2 }; /* 12 of the 16 registers; 4 x 2 took 1.13x its time */
#endif
typedef float vf __attribute__((vector_size(VW * 4)));
typedef int vi __attribute__((vector_size(VW * 4)));
typedef float vfu __attribute__((vector_size(VW * 4), aligned(4), may_alias)); /* unaligned */
typedef unsigned char u8v __attribute__((vector_size(VW), aligned(1), may_alias));

enum { KB = 64, MAX_D = 256, KV = KB / VW };

/* The vector width built (clara._blas.attention_lanes) */
int clara_attention_lanes(void) { return VW; }

/* Whether the compiler gave the vectors the registers they are written for: AVX-512 for 16
 * floats, AVX2 with FMA for 8 (clara._blas.fused_attention_default) */
int clara_attention_native(void) {
#if (VW == 16 && defined(__AVX512F__)) || (VW == 8 && defined(__AVX2__) && defined(__FMA__))
  return 1;
#else
  return 0;
#endif
}

/* where m: a, else b (m from a vector comparison: all bits set or none) */
static inline vf selv(vi m, vf a, vf b) { return (vf)(((vi)a & m) | ((vi)b & ~m)); }

/* e^x for x <= 0 (scores minus their running max), a vector at a time: x = n ln2 + r,
 * |r| <= ln2/2, e^r by Cephes' degree-6 polynomial for expf (about 1 ulp), 2^n through the
 * exponent bits. Below -87.3 (e^x under float's smallest normal) it returns e^-87.3, not 0. */
static inline vf expv(vf x) {
  const vf lo = (vf){0} - 87.3f;
  x = selv(x < lo, lo, x);
  vf t = x * 1.44269504088896341f + 0.5f; /* n = floor(x / ln2 + 1/2): the nearest */
  vi n = __builtin_convertvector(t, vi);   /* rounds toward zero ... */
  vf nf = __builtin_convertvector(n, vf);
  n += nf > t; /* ... so one less where t < 0 is not whole (a true comparison is -1) */
  nf = __builtin_convertvector(n, vf);
  vf r = x - nf * 0.693359375f - nf * -2.12194440e-4f;
  vf p = (vf){0} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  return p * (vf)((n + 127) << 23);
}

static inline vf loadv(const float *p) { return *(const vfu *)p; }
static inline void storev(float *p, vf v) { *(vfu *)p = v; }

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

static inline float hmaxv(vf v) {
  float t = v[0];
  for (int i = 1; i < VW; i++) t = v[i] > t ? v[i] : t;
  return t;
}

static inline float hsumv(vf v) {
  float t = 0.0f;
  for (int i = 0; i < VW; i++) t += v[i];
  return t;
}

/* One block: batch b, kv head g, query positions [t0, t0 + tile): the rep query heads of g.
 * Rows go GROUP at a time through each key block of KB: their scores (GROUP x KB, CH vectors
 * of keys at a time in registers), the mask, the running max and sum, then p @ V into their
 * accumulators (CH vectors of head columns at a time). Each score and output is summed in the
 * same order whatever the tiles, so a row's bits do not depend on the other rows. */
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
  vi iota;
  for (int e = 0; e < VW; e++) iota[e] = e;
  const vf neg = (vf){0} - INFINITY;
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
      vf acc[GROUP][KV];
      for (int c0 = 0; c0 < KV; c0 += CH) {
        vf s[GROUP][CH];
        for (int i = 0; i < GROUP; i++)
          for (int c = 0; c < CH; c++) s[i][c] = (vf){0};
        const float *kp = kt + j0 + VW * c0;
        for (int d = 0; d < D; d++, kp += a->ksd) {
          vf k[CH];
          for (int c = 0; c < CH; c++) k[c] = loadv(kp + VW * c);
          for (int i = 0; i < GROUP; i++) {
            float x = qr[i][d];
            for (int c = 0; c < CH; c++) s[i][c] += x * k[c];
          }
        }
        for (int i = 0; i < GROUP; i++)
          for (int c = 0; c < CH; c++) acc[i][c0 + c] = s[i][c];
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
        vf x[KV], top = neg;
        for (int c = 0; c < KV; c++) {
          vi keep = iota + VW * c < see[i];
          if (mrow != NULL) {
            vi bytes;
            if (VW * c + VW <= kn) {
              bytes = __builtin_convertvector(*(const u8v *)(mrow + VW * c), vi);
            } else {
              for (int e = 0; e < VW; e++) bytes[e] = VW * c + e < kn ? mrow[VW * c + e] : 0;
            }
            keep &= bytes != 0;
          }
          x[c] = selv(keep, acc[i][c] * a->scale, neg);
          top = selv(x[c] > top, x[c], top);
        }
        float mx = hmaxv(top);
        if (mx == -INFINITY) { /* nothing seen in this block */
          memset(p[i], 0, sizeof p[i]);
          continue;
        }
        live[i] = 1;
        float mnew = m[r] > mx ? m[r] : mx;
        float corr = m[r] == -INFINITY ? 0.0f : expf(m[r] - mnew);
        m[r] = mnew;
        vf sum = {0};
        for (int c = 0; c < KV; c++) {
          vf e = expv(x[c] - mnew);
          e = selv(x[c] == neg, (vf){0}, e);
          storev(&p[i][VW * c], e);
          sum += e;
        }
        l[r] = l[r] * corr + hsumv(sum);
        float *orow = o + (long)r * D;
        for (int d = 0; d < D; d += VW) storev(orow + d, loadv(orow + d) * corr);
      }
      /* o[rows] += p @ V[j0 : j0 + kn], CH vectors of columns of D at a time */
      for (int d0 = 0; d0 < D; d0 += VW * CH) {
        vf y[GROUP][CH];
        for (int i = 0; i < GROUP; i++)
          for (int c = 0; c < CH; c++)
            y[i][c] = live[i] ? loadv(o + (long)(r0 + i) * D + d0 + VW * c) : (vf){0};
        const float *vp = vbase + (long)j0 * a->vss + d0;
        for (int j = 0; j < kn; j++, vp += a->vss) {
          vf vv[CH];
          for (int c = 0; c < CH; c++) vv[c] = loadv(vp + VW * c);
          for (int i = 0; i < GROUP; i++) {
            float w = p[i][j];
            for (int c = 0; c < CH; c++) y[i][c] += w * vv[c];
          }
        }
        for (int i = 0; i < GROUP; i++)
          if (live[i])
            for (int c = 0; c < CH; c++) storev(o + (long)(r0 + i) * D + d0 + VW * c, y[i][c]);
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

/* ---- a few rows against keys in their cache layout ---------------------------------------
 * Decode steps (one query row per sequence and head) read the KV caches as they are kept,
 * (B, Hk, S, D) with the last axis contiguous: each score is a dot product along D, so no
 * transposed copy of the keys is made. One block per (batch, kv head): its `rep` query heads
 * x T rows share each key and value row while it is in cache. Called through the MLX
 * primitive of clara/_mlx_attention.cpp, in the graph like any op; every row is the same
 * arithmetic whatever the batch and the other rows. */
typedef struct {
  int B, H, Hk, T, S, D, rep, causal, offset;
  const float *q, *k, *v;
  long qsb, qsh, qst, ksb, ksh, kss, vsb, vsh, vss;
  const unsigned char *mask;
  long msb, msh, mst, mss;
  float scale;
  float *out; /* (B, H, T, D) contiguous */
} rows_args;


#if VW == 16
/* The sum of v's 16 lanes in four shuffle-and-add steps (a fixed order: the same bits for
 * every row and batch). */
static inline float sumv(vf v) {
  v += __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
  v += __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
  v += __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
  v += __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
  return v[0];
}

/* out[u] = sumv(a[u]) for 16 vectors at once (a transpose as it sums): each lane sum is the
 * same tree of additions as sumv's, so a key's score has the same bits whichever of the 16
 * it is (or the tail's one-at-a-time path), wherever the key sits in its row. */
static inline vf sumvxv(const vf *a) {
  vf b[8], c[4], d[2];
  for (int i = 0; i < 8; i++)
    b[i] = __builtin_shufflevector(a[2 * i], a[2 * i + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18,
                                   19, 20, 21, 22, 23) +
           __builtin_shufflevector(a[2 * i], a[2 * i + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25,
                                   26, 27, 28, 29, 30, 31);
  for (int i = 0; i < 4; i++)
    c[i] = __builtin_shufflevector(b[2 * i], b[2 * i + 1], 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10,
                                   11, 24, 25, 26, 27) +
           __builtin_shufflevector(b[2 * i], b[2 * i + 1], 4, 5, 6, 7, 20, 21, 22, 23, 12, 13,
                                   14, 15, 28, 29, 30, 31);
  for (int i = 0; i < 2; i++)
    d[i] = __builtin_shufflevector(c[2 * i], c[2 * i + 1], 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24,
                                   25, 12, 13, 28, 29) +
           __builtin_shufflevector(c[2 * i], c[2 * i + 1], 2, 3, 18, 19, 6, 7, 22, 23, 10, 11,
                                   26, 27, 14, 15, 30, 31);
  vf e = __builtin_shufflevector(d[0], d[1], 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28,
                                 14, 30) +
         __builtin_shufflevector(d[0], d[1], 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29,
                                 15, 31);
  /* e holds the keys in bit-reversed order (0, 8, 4, 12, ...): put them back */
  return __builtin_shufflevector(e, e, 0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15);
}
#else
/* The sum of v's 8 lanes in three shuffle-and-add steps (a fixed order: the same bits for
 * every row and batch). */
static inline float sumv(vf v) {
  v += __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3);
  v += __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5);
  v += __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6);
  return v[0];
}

/* out[u] = sumv(a[u]) for 8 vectors at once, each lane the same tree of additions as sumv's
 * (lanes l and l + 4, then l and l + 2, then l and l + 1). */
static inline vf sumvxv(const vf *a) {
  vf b[4], c[2];
  for (int i = 0; i < 4; i++)
    b[i] = __builtin_shufflevector(a[2 * i], a[2 * i + 1], 0, 1, 2, 3, 8, 9, 10, 11) +
           __builtin_shufflevector(a[2 * i], a[2 * i + 1], 4, 5, 6, 7, 12, 13, 14, 15);
  for (int i = 0; i < 2; i++)
    c[i] = __builtin_shufflevector(b[2 * i], b[2 * i + 1], 0, 1, 8, 9, 4, 5, 12, 13) +
           __builtin_shufflevector(b[2 * i], b[2 * i + 1], 2, 3, 10, 11, 6, 7, 14, 15);
  vf e = __builtin_shufflevector(c[0], c[1], 0, 8, 2, 10, 4, 12, 6, 14) +
         __builtin_shufflevector(c[0], c[1], 1, 9, 3, 11, 5, 13, 7, 15);
  /* e holds the keys in bit-reversed order (0, 4, 2, 6, ...): put them back */
  return __builtin_shufflevector(e, e, 0, 4, 2, 6, 1, 5, 3, 7);
}
#endif

/* q . k over nd x VW floats, VW lanes wide, in two chains (even and odd chunks) */
static inline vf dotv(const vf *qv, const float *kr, int nd) {
#if VW == 16
  if (nd == 4) /* head size 64: the loop below, unrolled */
    return (qv[0] * loadv(kr) + qv[2] * loadv(kr + 32)) +
           (qv[1] * loadv(kr + 16) + qv[3] * loadv(kr + 48));
#endif
  vf e = qv[0] * loadv(kr), o = nd > 1 ? qv[1] * loadv(kr + VW) : (vf){0};
  for (int c = 2; c < nd; c += 2) {
    e += qv[c] * loadv(kr + VW * c);
    if (c + 1 < nd) o += qv[c + 1] * loadv(kr + VW * c + VW);
  }
  return e + o;
}

/* query rows that share each key and value row while it is in cache; value columns per pass
 * (RC vectors: 4 x 4 or 4 x 2 accumulators in registers) */
enum { RG = 4, RC = VW == 16 ? 4 : 2 };

/* Rows [r0, r0 + n) of block (b, g), n <= RG: r = i * T + t is query head g * rep + i at
 * position t. Keys and values are read once for the n rows. */
static void rows_group(const rows_args *a, int b, int g, int r0, int n, float *p) {
  int D = a->D, S = a->S, nd = D / VW;
  const float *kb = a->k + b * a->ksb + g * a->ksh, *vb = a->v + b * a->vsb + g * a->vsh;
  const vf none = (vf){0} - INFINITY;
  vf qv[RG][MAX_D / VW];
  const unsigned char *mr[RG];
  int seen[RG], last = 0;
  float *orow[RG], inv[RG];
  for (int i = 0; i < n; i++) {
    int r = r0 + i, h = g * a->rep + r / a->T, t = r % a->T;
    const float *qr = a->q + b * a->qsb + h * a->qsh + t * a->qst;
    for (int c = 0; c < nd; c++) qv[i][c] = loadv(qr + VW * c);
    mr[i] = a->mask == NULL ? NULL : a->mask + b * a->msb + h * a->msh + t * a->mst;
    seen[i] = a->causal ? t + a->offset + 1 : S; /* keys [0, seen) are visible */
    if (seen[i] > S) seen[i] = S;
    if (seen[i] > last) last = seen[i];
    orow[i] = a->out + (((long)b * a->H + h) * a->T + t) * D;
  }
  /* scores, VW keys at a time for all n rows, then the tail one by one */
  int j = 0;
  for (; j + VW <= last; j += VW)
    for (int i = 0; i < n; i++) {
      vf part[VW];
      for (int u = 0; u < VW; u++) part[u] = dotv(qv[i], kb + (j + u) * a->kss, nd);
      storev(p + (long)i * S + j, sumvxv(part) * a->scale);
    }
  for (; j < last; j++)
    for (int i = 0; i < n; i++) p[(long)i * S + j] = sumv(dotv(qv[i], kb + j * a->kss, nd)) * a->scale;
  for (int i = 0; i < n; i++) {
    float *pr = p + (long)i * S;
    int sn = seen[i];
    /* the keys it may not see drop out; the largest score of the others */
    vf most = none;
    for (j = 0; j + VW <= sn; j += VW) {
      vf x = loadv(pr + j);
      if (mr[i] != NULL && a->mss == 1) {
        vi m = __builtin_convertvector(*(const u8v *)(mr[i] + j), vi);
        x = selv(m != 0, x, none);
        storev(pr + j, x);
      } else if (mr[i] != NULL) {
        for (int u = 0; u < VW; u++)
          if (!mr[i][(j + u) * a->mss]) x[u] = -INFINITY;
        storev(pr + j, x);
      }
      most = selv(x > most, x, most);
    }
    float top = hmaxv(most);
    for (; j < sn; j++) {
      if (mr[i] != NULL && !mr[i][j * a->mss])
        pr[j] = -INFINITY;
      else if (pr[j] > top)
        top = pr[j];
    }
    for (j = sn; j < last; j++) pr[j] = 0.0f; /* past its causal limit */
    if (top == -INFINITY) { /* a row that sees no key: zeros */
      for (j = 0; j < sn; j++) pr[j] = 0.0f;
      inv[i] = 0.0f;
      continue;
    }
    /* p = exp(s - top), summed in VW lanes counted from the row's last visible key: a
     * batch's left padding (zeros in front) lands in other lanes or adds nothing, so a row
     * gets the same bits alone and in any batch */
    int lead = sn % VW;
    vf total = (vf){0};
    if (lead) {
      vf x = none;
      for (int u = 0; u < lead; u++) x[VW - lead + u] = pr[u];
      vf e = selv(x == -INFINITY, (vf){0}, expv(x - top));
      for (int u = 0; u < lead; u++) pr[u] = e[VW - lead + u];
      total += e;
    }
    for (j = lead; j < sn; j += VW) {
      vf x = loadv(pr + j);
      vf e = selv(x == -INFINITY, (vf){0}, expv(x - top));
      storev(pr + j, e);
      total += e;
    }
    inv[i] = 1.0f / sumv(total);
  }
  /* out = p @ V, RC vectors of columns at a time, each row's sums in key order from its last
   * visible key back (a batch's left padding, p = 0, is skipped): every value row read once */
  for (int c0 = 0; c0 < nd; c0 += RC) {
    int w = nd - c0 < RC ? nd - c0 : RC;
    vf o[RG][RC];
    for (int i = 0; i < RG; i++)
      for (int c = 0; c < RC; c++) o[i][c] = (vf){0};
    const float *col = vb + VW * c0;
    for (j = last - 1; j >= 0; j--) {
      const float *vr = col + j * a->vss;
      vf vv[RC];
      for (int c = 0; c < RC; c++) vv[c] = c < w ? loadv(vr + VW * c) : vv[0];
#define ROW(I)                                                                              \
  if (n > I) {                                                                              \
    float pj = p[(long)(I) * S + j];                                                        \
    if (pj != 0.0f) {                                                                       \
      for (int c = 0; c < RC; c++) o[I][c] += pj * vv[c];                                   \
    }                                                                                       \
  }
      ROW(0) ROW(1) ROW(2) ROW(3)
#undef ROW
    }
    for (int i = 0; i < n; i++)
      for (int c = 0; c < w; c++) storev(orow[i] + VW * (c0 + c), o[i][c] * inv[i]);
  }
}

static void rows_block(const rows_args *a, int b, int g) {
  int n = a->rep * a->T;
  float stack[RG * 2048], *p = a->S <= 2048 ? stack : malloc((size_t)RG * a->S * sizeof(float));
  if (p == NULL) return;
  for (int r0 = 0; r0 < n; r0 += RG) rows_group(a, b, g, r0, n - r0 < RG ? n - r0 : RG, p);
  if (p != stack) free(p);
}

static void rows_blocks(const void *ctx, int b0, int b1) {
  const rows_args *a = ctx;
  for (int x = b0; x < b1; x++) rows_block(a, x / a->Hk, x % a->Hk);
}

/* softmax(q k^T * scale + mask) v for a few query rows: q (B, H, T, D), k and v (B, Hk, S, D),
 * each by its strides in floats with the last axis contiguous; mask NULL or bytes read at
 * b * msb + h * msh + t * mst + j * mss (0 strides where it broadcasts); causal: row t sees
 * keys j <= t + offset. Writes out (B, H, T, D) contiguous. Returns 0 (nothing done) unless
 * D is a multiple of 16 up to MAX_D and H a multiple of Hk. */
int clara_attention_rows(int B, int H, int Hk, int T, int S, int D, const float *q, long qsb,
                         long qsh, long qst, const float *k, long ksb, long ksh, long kss,
                         const float *v, long vsb, long vsh, long vss,
                         const unsigned char *mask, long msb, long msh, long mst, long mss,
                         int causal, int offset, float scale, float *out) {
  if (D % 16 != 0 || D > MAX_D || Hk <= 0 || H % Hk != 0 || T <= 0 || S <= 0 ||
      T > S)
    return 0;
  rows_args a = {B, H, Hk, T, S, D, H / Hk, causal, offset, q, k, v, qsb, qsh, qst,
                 ksb, ksh, kss, vsb, vsh, vss, mask, msb, msh, mst, mss, scale, out};
  /* a batch-1 step's few rows: sharing them out costs more than it saves (below 2^18) */
  long work = (long)B * H * T * S * D;
  clara_parallel_blocks(rows_blocks, &a, B * Hk, work >= (1L << 18));
  return 1;
}
