/* Thin float32 matmuls for MLX's Linux CPU backend (decode steps).
 *
 * MLX computes every float32 matmul with cblas_sgemm. A decode step multiplies a few rows
 * (one per sequence in the batch) by each weight matrix, and OpenBLAS's sgemm packs the whole
 * weight matrix before it multiplies: for x (1 x 576) times the 49152 x 576 output embedding
 * that costs ~30 ms where reading the weights once costs ~5. This library is loaded before
 * OpenBLAS with RTLD_GLOBAL, so MLX's cblas_sgemm resolves here. Row-major products with a
 * transposed right-hand side (nn.Linear's x @ W.T) and at most `thin_rows` rows are computed
 * here, streaming each weight row once for all rows of x; everything else goes to the BLAS
 * sgemm that clara_thinmm_set_sgemm installed.
 *
 * Every output element (q, r) is the same arithmetic whatever the number of rows and their
 * position in the tile, so a sequence's logits do not depend on the batch it decodes in.
 * Weights registered with clara_thinmm_add_copy (the merged decode copies) are read from an
 * int8 (per-row scale, row by row) or float16 copy (in panels of 16 outputs, f16p_pack): a
 * quarter or half of the memory traffic that bounds decoding, with products and sums still in
 * float32.
 *
 * On x86 CPUs with AMX (Intel Sapphire Rapids and later), a float16 copy also gets a bfloat16
 * copy packed for AMX tiles, and every product against those weights (prefill and decode)
 * runs on the tile unit: x rounded to bfloat16, products summed in float32 (how GPUs run
 * these models). Each output element sums its k blocks in one fixed order whatever the
 * number of rows, so a sequence gets the same bits alone or in a batch. Measured here: 8
 * prompts prefill in 0.6x the time, 8 sequences decode 1.3x faster, held-out answers as good
 * (BENCHMARKS.md).
 * Built by clara/_blas.py with the machine's C compiler (-O3 -march=native -mtune=generic).
 */
#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int,
                         const float *, int, float, float *, int);

enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112 };

static sgemm_fn fallback;
static int thin_rows = 16;

void clara_thinmm_set_sgemm(void *fn) { fallback = (sgemm_fn)fn; }
void clara_thinmm_set_rows(int rows) { thin_rows = rows; }
int clara_thinmm_rows(void) { return thin_rows; }

/* ---- helper threads ------------------------------------------------------------------------
 * A product's column blocks are shared out by an atomic counter: the calling thread (MLX's)
 * and `threads - 1` helpers each claim the next chunk until none is left. The caller never
 * waits for a helper that has not claimed anything, only for chunks a helper is computing,
 * so a helper the OS has not scheduled (on a busy machine: the server's event loop, a client,
 * the thread building the next graph) costs nothing; with OpenMP's static split the caller
 * waited at the barrier for it. Helpers spin for a short while between products (a decode step
 * runs hundreds back to back), then sleep on a futex until the next one. */
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef void (*block_fn)(const void *ctx, int b0, int b1);

enum { MAX_THREADS = 64, SPIN = 4000 };
static int threads = 1;     /* wanted: the caller + helpers */
static int helpers;         /* started so far */
static int active_helpers;  /* helpers that take part: threads - 1 (atomic) */
static int sleepers;        /* helpers in futex wait (atomic) */
static unsigned generation; /* bumped per product (atomic; the futex word) */
static int busy;            /* a product is on offer (atomic; a second caller runs alone) */
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
/* The product on offer. `word` is (generation << 32 | next unclaimed block): a claim is a
 * compare-and-swap on it, so a claim succeeds only while the product it read is still the one
 * on offer, and the caller reuses these fields only after every claimed block is `done`.
 * Before it rewrites the fields the caller moves `word` to the next generation with no block
 * left (CLOSED), and opens it only after: a helper that read the old word cannot claim against
 * the new fields (it once could, between the caller's field stores and its word store, and ran
 * the next product's blocks twice, so `job_done` overshot and the caller waited forever). */
static unsigned long long word;
static block_fn job_fn;
static const void *job_ctx;
static int job_blocks, job_chunk, job_done;
#define CLOSED 0xffffffffull

static inline void relax(void) {
#if defined(__x86_64__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

static void run_chunks(unsigned g) {
  for (;;) {
    unsigned long long w = __atomic_load_n(&word, __ATOMIC_SEQ_CST);
    if ((unsigned)(w >> 32) != g) return;
    block_fn fn = __atomic_load_n(&job_fn, __ATOMIC_SEQ_CST);
    const void *ctx = __atomic_load_n(&job_ctx, __ATOMIC_SEQ_CST);
    int blocks = __atomic_load_n(&job_blocks, __ATOMIC_SEQ_CST);
    int chunk = __atomic_load_n(&job_chunk, __ATOMIC_SEQ_CST);
    if ((unsigned)w >= (unsigned)blocks) return; /* all claimed, or CLOSED */
    int b = (int)(unsigned)w;
    int e = b + chunk < blocks ? b + chunk : blocks;
    unsigned long long claimed = ((unsigned long long)g << 32) | (unsigned)e;
    if (!__atomic_compare_exchange_n(&word, &w, claimed, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
      continue; /* someone else claimed, or another product is on offer now */
    fn(ctx, b, e);
    __atomic_add_fetch(&job_done, e - b, __ATOMIC_SEQ_CST);
  }
}

static void *helper_main(void *arg) {
  int index = (int)(size_t)arg;
  unsigned seen = __atomic_load_n(&generation, __ATOMIC_SEQ_CST);
  for (;;) {
    unsigned g;
    int spins = 0;
    while ((g = __atomic_load_n(&generation, __ATOMIC_SEQ_CST)) == seen) {
      if (++spins < SPIN) {
        relax();
        continue;
      }
      __atomic_add_fetch(&sleepers, 1, __ATOMIC_SEQ_CST);
      if (__atomic_load_n(&generation, __ATOMIC_SEQ_CST) == seen)
        syscall(SYS_futex, &generation, FUTEX_WAIT_PRIVATE, seen, NULL, NULL, 0);
      __atomic_sub_fetch(&sleepers, 1, __ATOMIC_SEQ_CST);
      spins = 0;
    }
    seen = g;
    if (index < __atomic_load_n(&active_helpers, __ATOMIC_SEQ_CST)) run_chunks(g);
  }
  return NULL;
}

void clara_thinmm_set_threads(int n) {
  n = n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : n;
  pthread_mutex_lock(&pool_lock);
  while (helpers < n - 1) {
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int failed = pthread_create(&t, &attr, helper_main, (void *)(size_t)helpers);
    pthread_attr_destroy(&attr);
    if (failed) break;
    helpers++;
  }
  threads = helpers + 1 < n ? helpers + 1 : n;
  __atomic_store_n(&active_helpers, threads - 1, __ATOMIC_SEQ_CST);
  pthread_mutex_unlock(&pool_lock);
}

/* fn over blocks [0, blocks), shared with the helpers when `wide`. */
static void parallel_blocks(block_fn fn, const void *ctx, int blocks, int wide) {
  int t = threads;
  if (!wide || t < 2 || blocks < 2 || __atomic_exchange_n(&busy, 1, __ATOMIC_SEQ_CST)) {
    if (blocks > 0) fn(ctx, 0, blocks);
    return;
  }
  int chunk = blocks / (8 * t);
  chunk = chunk < 1 ? 1 : chunk > 64 ? 64 : chunk;
  unsigned g = __atomic_load_n(&generation, __ATOMIC_SEQ_CST) + 1;
  __atomic_store_n(&word, ((unsigned long long)g << 32) | CLOSED, __ATOMIC_SEQ_CST);
  __atomic_store_n(&job_fn, fn, __ATOMIC_SEQ_CST);
  __atomic_store_n(&job_ctx, ctx, __ATOMIC_SEQ_CST);
  __atomic_store_n(&job_blocks, blocks, __ATOMIC_SEQ_CST);
  __atomic_store_n(&job_chunk, chunk, __ATOMIC_SEQ_CST);
  __atomic_store_n(&job_done, 0, __ATOMIC_SEQ_CST);
  __atomic_store_n(&word, (unsigned long long)g << 32, __ATOMIC_SEQ_CST);
  __atomic_store_n(&generation, g, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&sleepers, __ATOMIC_SEQ_CST) > 0)
    syscall(SYS_futex, &generation, FUTEX_WAKE_PRIVATE, t - 1, NULL, NULL, 0);
  run_chunks(g);
  /* every block is claimed; wait only for the ones a helper is still computing */
  while (__atomic_load_n(&job_done, __ATOMIC_SEQ_CST) < blocks) relax();
  __atomic_store_n(&busy, 0, __ATOMIC_SEQ_CST);
}

/* The same pool for the other kernels built into this library (_attention.c). */
void clara_parallel_blocks(block_fn fn, const void *ctx, int blocks, int wide) {
  parallel_blocks(fn, ctx, blocks, wide);
}

typedef float v8 __attribute__((vector_size(32), aligned(4)));

/* Float16 storage: F16C on x86, the native type on arm64; elsewhere no copies are made. */
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#if defined(__F16C__)
#define HAVE_HALF 1
typedef unsigned short half;
#define LOAD_F16(p) ((v8)_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p))))
static inline half float_to_half(float f) { return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT); }
#elif defined(__aarch64__)
#define HAVE_HALF 1
typedef __fp16 half;
typedef __fp16 h8 __attribute__((vector_size(16), aligned(2)));
#define LOAD_F16(p) __builtin_convertvector(*(const h8 *)(p), v8)
static inline half float_to_half(float f) { return (half)f; }
#else
#define HAVE_HALF 0
typedef unsigned short half;
#define LOAD_F16(p) ((v8){0})
static inline half float_to_half(float f) { return (half)f; }
#endif

static inline float lanes_sum(v8 v) {
  float s = 0.0f;
  for (int j = 0; j < 8; j++) s += v[j];
  return s;
}

#define LOAD_F32(p) (*(const v8 *)(p))
#define SCALAR_F32(x) (x)
#if defined(__AVX2__)
#define LOAD_I8(p) ((v8)_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p)))))
#else
typedef signed char i8x8 __attribute__((vector_size(8), aligned(1)));
#define LOAD_I8(p) __builtin_convertvector(*(const i8x8 *)(p), v8)
#endif
#define SCALAR_I8(x) ((float)(x))

/* out[q][r] = dot(a row q, w row r) for MR rows of a and NR rows of w (float32 or int8). */
#define TILE(MR, NR, T, NAME, LOAD, SCALAR)                                                         \
  static void NAME##_##MR##x##NR(const float *a, int lda, const T *w, int ldw, int k,        \
                                 float out[4][4]) {                                          \
    v8 acc[MR][NR];                                                                          \
    memset(acc, 0, sizeof acc);                                                              \
    int i = 0;                                                                               \
    for (; i + 8 <= k; i += 8) {                                                             \
      v8 wv[NR];                                                                             \
      for (int r = 0; r < NR; r++) wv[r] = LOAD(w + (size_t)r * ldw + i);                    \
      for (int q = 0; q < MR; q++) {                                                         \
        v8 av = *(const v8 *)(a + (size_t)q * lda + i);                                      \
        for (int r = 0; r < NR; r++) acc[q][r] += av * wv[r];                                \
      }                                                                                      \
    }                                                                                        \
    for (int q = 0; q < MR; q++)                                                             \
      for (int r = 0; r < NR; r++) {                                                         \
        float s = lanes_sum(acc[q][r]);                                                      \
        for (int j = i; j < k; j++)                                                          \
          s += a[(size_t)q * lda + j] * SCALAR(w[(size_t)r * ldw + j]);                       \
        out[q][r] = s;                                                                       \
      }                                                                                      \
  }
#define TILES(T, NAME, LOAD, SCALAR)                                                                \
  TILE(1, 4, T, NAME, LOAD, SCALAR)                                                                  \
  TILE(2, 4, T, NAME, LOAD, SCALAR)                                                                  \
  TILE(3, 4, T, NAME, LOAD, SCALAR)                                                                  \
  TILE(4, 4, T, NAME, LOAD, SCALAR)                                                                  \
  TILE(1, 1, T, NAME, LOAD, SCALAR)                                                                  \
  TILE(2, 1, T, NAME, LOAD, SCALAR)                                                                  \
  TILE(3, 1, T, NAME, LOAD, SCALAR)                                                                  \
  TILE(4, 1, T, NAME, LOAD, SCALAR)                                                                  \
  typedef void (*NAME##_fn)(const float *, int, const T *, int, int, float[4][4]);           \
  static const NAME##_fn NAME##_x4[5] = {0, NAME##_1x4, NAME##_2x4, NAME##_3x4, NAME##_4x4}; \
  static const NAME##_fn NAME##_x1[5] = {0, NAME##_1x1, NAME##_2x1, NAME##_3x1, NAME##_4x1};
TILES(float, f32, LOAD_F32, SCALAR_F32)
TILES(signed char, i8, LOAD_I8, SCALAR_I8)

/* Columns [r0, r0 + nr) of c for all m rows (nr is 4, or 1 for the leftover columns). */
#define COLUMNS(T, NAME)                                                                    \
  static void NAME##_columns(int m, int r0, int nr, int k, float alpha, const float *a,      \
                             int lda, const T *w, int ldw, const float *scale, float beta,   \
                             float *c, int ldc) {                                            \
    float out[4][4];                                                                         \
    for (int q0 = 0; q0 < m; q0 += 4) {                                                      \
      int mr = m - q0 < 4 ? m - q0 : 4;                                                      \
      (nr == 4 ? NAME##_x4 : NAME##_x1)[mr](a + (size_t)q0 * lda, lda,                       \
                                            w + (size_t)r0 * ldw, ldw, k, out);              \
      for (int q = 0; q < mr; q++)                                                           \
        for (int r = 0; r < nr; r++) {                                                       \
          float *o = c + (size_t)(q0 + q) * ldc + r0 + r;                                    \
          float v = scale != NULL ? out[q][r] * scale[r0 + r] : out[q][r];                   \
          *o = beta == 0.0f ? alpha * v : alpha * v + beta * *o;                             \
        }                                                                                    \
    }                                                                                        \
  }                                                                                          \
  typedef struct {                                                                           \
    int m, k, lda, ldw, ldc;                                                                 \
    float alpha, beta;                                                                       \
    const float *a, *scale;                                                                  \
    const T *w;                                                                              \
    float *c;                                                                                \
  } NAME##_args;                                                                             \
  static void NAME##_blocks(const void *ctx, int b0, int b1) {                               \
    const NAME##_args *p = ctx;                                                              \
    for (int b = b0; b < b1; b++)                                                            \
      NAME##_columns(p->m, 4 * b, 4, p->k, p->alpha, p->a, p->lda, p->w, p->ldw, p->scale,   \
                     p->beta, p->c, p->ldc);                                                 \
  }                                                                                          \
  static void NAME##_thin(int m, int n, int k, float alpha, const float *a, int lda,         \
                          const T *w, int ldw, const float *scale, float beta, float *c,     \
                          int ldc) {                                                         \
    NAME##_args p = {m, k, lda, ldw, ldc, alpha, beta, a, scale, w, c};                      \
    /* small products: handing them out costs more than it saves */                          \
    parallel_blocks(NAME##_blocks, &p, n / 4, (size_t)n * k >= 65536);                       \
    for (int r = 4 * (n / 4); r < n; r++)                                                    \
      NAME##_columns(m, r, 1, k, alpha, a, lda, w, ldw, scale, beta, c, ldc);                \
  }
COLUMNS(float, f32)

/* ---- float16 decode copies, in panels ------------------------------------------------------
 * A float16 copy is stored in panels of 16 outputs: panel p holds W[16p + j][i] at [p][i][j]
 * (the last panel zero-padded). Each output element is one chain of float32 fused multiply-adds
 * over i in order, a broadcast row element times a panel row, whatever the rows and threads:
 * a sequence gets the same bits alone or in a batch. Against the row-by-row dot products the
 * int8 copies use, this reads each float16 weight once per up to 8 rows of x and keeps the
 * accumulators in registers: with 16 AVX2 registers the dot-product tiles spilled, and 8
 * sequences' products ran at about half the machine's float32 rate (BENCHMARKS.md). */
#define F16P 16 /* outputs per panel */
static half *f16p_pack(const float *w, int n, int k) {
  int panels = (n + F16P - 1) / F16P;
  half *h = malloc((size_t)panels * k * F16P * sizeof(half));
  if (h == NULL) return NULL;
  for (int p = 0; p < panels; p++)
    for (int i = 0; i < k; i++)
      for (int j = 0; j < F16P; j++) {
        int r = F16P * p + j;
        h[((size_t)p * k + i) * F16P + j] = float_to_half(r < n ? w[(size_t)r * k + i] : 0.0f);
      }
  return h;
}
#define BROADCAST(x) ((v8){x, x, x, x, x, x, x, x})
/* Rows [0, MR) of a times W columns [c0, c0 + 8 * NV) from `panel` on (NV vectors of 8, c0 a
 * multiple of 8; columns past a panel's 16 are the next panel's). */
#define F16P_AT(panel, k, i, c) ((panel) + ((size_t)((c) / F16P) * (k) + (i)) * F16P + (c) % F16P)
#define F16P_TILE(MR, NV)                                                                     \
  static void f16p_##MR##x##NV(const float *a, int lda, const half *panel, int k, int c0,     \
                               v8 out[MR][NV]) {                                             \
    v8 acc[MR][NV];                                                                          \
    memset(acc, 0, sizeof acc);                                                              \
    for (int i = 0; i < k; i++) {                                                            \
      v8 wv[NV];                                                                             \
      for (int v = 0; v < NV; v++) wv[v] = LOAD_F16(F16P_AT(panel, k, i, c0 + 8 * v));       \
      for (int q = 0; q < MR; q++) {                                                         \
        v8 x = BROADCAST(a[(size_t)q * lda + i]);                                            \
        for (int v = 0; v < NV; v++) acc[q][v] += x * wv[v];                                 \
      }                                                                                      \
    }                                                                                        \
    memcpy(out, acc, sizeof acc);                                                            \
  }
/* 1-6 rows on one panel; 1-2 rows on two panels at once (4 or 8 chains in flight instead of
 * 2 or 4); 8 rows on half a panel (8 chains) */
F16P_TILE(1, 2)
F16P_TILE(2, 2)
F16P_TILE(3, 2)
F16P_TILE(4, 2)
F16P_TILE(5, 2)
F16P_TILE(6, 2)
F16P_TILE(1, 4)
F16P_TILE(2, 4)
F16P_TILE(8, 1)
typedef void (*f16p_fn)(const float *, int, const half *, int, int, v8[][2]);
static const f16p_fn f16p_rows[7] = {0, f16p_1x2, f16p_2x2, f16p_3x2, f16p_4x2, f16p_5x2, f16p_6x2};
typedef struct {
  int m, n, k, lda, ldc;
  float alpha, beta;
  const float *a;
  const half *w;
  float *c;
} f16p_args;
/* out (rows x 8 floats, row stride `stride` vectors) into c at rows q0.., columns col.. */
static void f16p_put(const f16p_args *p, const v8 *out, int rows, int stride, int q0, int col,
                     int width) {
  width = p->n - col < width ? p->n - col : width;
  for (int q = 0; q < rows; q++) {
    const float *o = (const float *)(out + (size_t)q * stride);
    float *cr = p->c + (size_t)(q0 + q) * p->ldc + col;
    for (int j = 0; j < width; j++)
      cr[j] = p->beta == 0.0f ? p->alpha * o[j] : p->alpha * o[j] + p->beta * cr[j];
  }
}
/* Blocks of two panels (32 outputs): every row of a. */
static void f16p_blocks(const void *ctx, int b0, int b1) {
  const f16p_args *p = ctx;
  int panels = (p->n + F16P - 1) / F16P;
  for (int b = b0; b < b1; b++) {
    int pa = 2 * b, pb = 2 * b + 2 < panels ? 2 * b + 2 : panels;
    const half *first = p->w + (size_t)pa * p->k * F16P;
    if (p->m <= 2 && pb - pa == 2) {
      v8 out[2][4];
      if (p->m == 1)
        f16p_1x4(p->a, p->lda, first, p->k, 0, out);
      else
        f16p_2x4(p->a, p->lda, first, p->k, 0, out);
      f16p_put(p, &out[0][0], p->m, 4, 0, F16P * pa, 2 * F16P);
      continue;
    }
    for (int pn = pa; pn < pb; pn++) {
      const half *panel = p->w + (size_t)pn * p->k * F16P;
      int q0 = 0;
      for (; p->m - q0 >= 8; q0 += 8)
        for (int h = 0; h < F16P; h += 8) { /* 8 rows: half a panel at a time (8 chains) */
          v8 out[8][1];
          f16p_8x1(p->a + (size_t)q0 * p->lda, p->lda, panel, p->k, h, out);
          f16p_put(p, &out[0][0], 8, 1, q0, F16P * pn + h, 8);
        }
      for (; q0 < p->m; q0 += 6) {
        int rows = p->m - q0 < 6 ? p->m - q0 : 6;
        v8 out[6][2];
        f16p_rows[rows](p->a + (size_t)q0 * p->lda, p->lda, panel, p->k, 0, out);
        f16p_put(p, &out[0][0], rows, 2, q0, F16P * pn, F16P);
      }
    }
  }
}
static void f16_thin(int m, int n, int k, float alpha, const float *a, int lda, const half *w,
                     float beta, float *c, int ldc) {
  f16p_args p = {m, n, k, lda, ldc, alpha, beta, a, w, c};
  int panels = (n + F16P - 1) / F16P;
  parallel_blocks(f16p_blocks, &p, (panels + 1) / 2, (size_t)n * k >= 65536);
}
COLUMNS(signed char, i8)

/* ---- float32 products against weights packed once --------------------------------------
 * OpenBLAS packs the weight matrix on every call. For the tens to hundreds of rows of a query
 * encoding or a compressor pass that costs about as much as the products (one core, measured:
 * 33 rows x 576 x 576, 70 GFLOP/s with its packing, 138 from panels packed once; 132 rows,
 * 123 against 151; 272 rows, 135 against 147). The compressor's and query adapter's frozen
 * float32 base weights can get a copy packed once (`clara_thinmm_add_copy`, KIND_F32P) in
 * panels of 32 outputs: panel p holds W[32p + j][i] at [p][i][j]. Each output element is one
 * chain of float32 fused multiply-adds over i in order, whatever the rows and threads, so a
 * row gets the same bits alone or in a batch. */
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#define HAVE_F32P 1
static float *f32p_pack(const float *w, int n, int k) {
  float *p = aligned_alloc(64, ((size_t)n * k * sizeof(float) + 63) / 64 * 64);
  if (p == NULL) return NULL;
  for (int pn = 0; pn < n / 32; pn++)
    for (int i = 0; i < k; i++)
      for (int j = 0; j < 32; j++)
        p[((size_t)pn * k + i) * 32 + j] = w[(size_t)(32 * pn + j) * k + i];
  return p;
}
#if defined(__AVX512F__)
#define F32P_MR 8 /* rows per kernel call */
/* MR rows of c, 32 columns: 2 x MR accumulators, one broadcast of a per row and step */
#define F32P_KERNEL(MR)                                                                        \
  static void f32p_##MR(const float *a, int lda, const float *panel, int k, float *c, int ldc,  \
                        float alpha) {                                                          \
    __m512 lo[MR], hi[MR];                                                                      \
    for (int r = 0; r < MR; r++) lo[r] = hi[r] = _mm512_setzero_ps();                           \
    for (int i = 0; i < k; i++) {                                                               \
      __m512 b0 = _mm512_load_ps(panel + (size_t)i * 32);                                       \
      __m512 b1 = _mm512_load_ps(panel + (size_t)i * 32 + 16);                                  \
      for (int r = 0; r < MR; r++) {                                                            \
        __m512 x = _mm512_set1_ps(a[(size_t)r * lda + i]);                                      \
        lo[r] = _mm512_fmadd_ps(x, b0, lo[r]);                                                  \
        hi[r] = _mm512_fmadd_ps(x, b1, hi[r]);                                                  \
      }                                                                                         \
    }                                                                                           \
    __m512 s = _mm512_set1_ps(alpha);                                                           \
    for (int r = 0; r < MR; r++) {                                                              \
      _mm512_storeu_ps(c + (size_t)r * ldc, alpha == 1.0f ? lo[r] : _mm512_mul_ps(s, lo[r]));   \
      _mm512_storeu_ps(c + (size_t)r * ldc + 16, alpha == 1.0f ? hi[r] : _mm512_mul_ps(s, hi[r])); \
    }                                                                                           \
  }
F32P_KERNEL(7)
F32P_KERNEL(8)
#else
#define F32P_MR 6 /* rows per kernel call */
/* AVX2 (16 registers of 8 floats): MR rows of c, 32 columns as two halves of 16, each 2 x MR
 * accumulators (12 registers at 6 rows) and one broadcast of a per row and step. An output
 * element is the same chain of fused multiply-adds as with AVX-512, so the same bits. */
#define F32P_KERNEL(MR)                                                                        \
  static void f32p_##MR(const float *a, int lda, const float *panel, int k, float *c, int ldc,  \
                        float alpha) {                                                          \
    for (int h = 0; h < 32; h += 16) {                                                          \
      __m256 lo[MR], hi[MR];                                                                    \
      for (int r = 0; r < MR; r++) lo[r] = hi[r] = _mm256_setzero_ps();                         \
      for (int i = 0; i < k; i++) {                                                             \
        __m256 b0 = _mm256_load_ps(panel + (size_t)i * 32 + h);                                 \
        __m256 b1 = _mm256_load_ps(panel + (size_t)i * 32 + h + 8);                             \
        for (int r = 0; r < MR; r++) {                                                          \
          __m256 x = _mm256_set1_ps(a[(size_t)r * lda + i]);                                    \
          lo[r] = _mm256_fmadd_ps(x, b0, lo[r]);                                                \
          hi[r] = _mm256_fmadd_ps(x, b1, hi[r]);                                                \
        }                                                                                       \
      }                                                                                         \
      __m256 s = _mm256_set1_ps(alpha);                                                         \
      for (int r = 0; r < MR; r++) {                                                            \
        float *cr = c + (size_t)r * ldc + h;                                                    \
        _mm256_storeu_ps(cr, alpha == 1.0f ? lo[r] : _mm256_mul_ps(s, lo[r]));                  \
        _mm256_storeu_ps(cr + 8, alpha == 1.0f ? hi[r] : _mm256_mul_ps(s, hi[r]));              \
      }                                                                                         \
    }                                                                                           \
  }
#endif
F32P_KERNEL(1)
F32P_KERNEL(2)
F32P_KERNEL(3)
F32P_KERNEL(4)
F32P_KERNEL(5)
F32P_KERNEL(6)
typedef void (*f32p_fn)(const float *, int, const float *, int, float *, int, float);
#if F32P_MR == 8
static const f32p_fn f32p_rows[9] = {0, f32p_1, f32p_2, f32p_3, f32p_4,
                                     f32p_5, f32p_6, f32p_7, f32p_8};
#else
static const f32p_fn f32p_rows[7] = {0, f32p_1, f32p_2, f32p_3, f32p_4, f32p_5, f32p_6};
#endif
typedef struct {
  int m, k, lda, ldc;
  float alpha;
  const float *a, *panels;
  float *c;
} f32p_args;
static void f32p_blocks(const void *ctx, int b0, int b1) {
  const f32p_args *p = ctx;
  for (int b = b0; b < b1; b++) {
    const float *panel = p->panels + (size_t)b * p->k * 32;
    for (int q = 0; q < p->m; q += F32P_MR) {
      int mr = p->m - q < F32P_MR ? p->m - q : F32P_MR;
      f32p_rows[mr](p->a + (size_t)q * p->lda, p->lda, panel, p->k, p->c + (size_t)q * p->ldc + 32 * b,
                    p->ldc, p->alpha);
    }
  }
}
static void f32p_gemm(int m, int n, int k, float alpha, const float *a, int lda,
                      const float *panels, float *c, int ldc) {
  f32p_args p = {m, k, lda, ldc, alpha, a, panels, c};
  parallel_blocks(f32p_blocks, &p, n / 32, (size_t)n * k >= 65536);
}
#else
#define HAVE_F32P 0
static float *f32p_pack(const float *w, int n, int k) {
  (void)w, (void)n, (void)k;
  return NULL;
}
static void f32p_gemm(int m, int n, int k, float alpha, const float *a, int lda,
                      const float *panels, float *c, int ldc) {
  (void)m, (void)n, (void)k, (void)alpha, (void)a, (void)lda, (void)panels, (void)c, (void)ldc;
}
#endif
int clara_thinmm_f32p_available(void) { return HAVE_F32P; }

/* ---- bfloat16 products: AMX tiles or AVX-512 BF16 --------------------------------------
 * W (n x k, row-major) is packed as 16 x 32 tiles of B = W^T in the VNNI pair layout the tile
 * unit reads: tile (nb, kb) holds W[16 nb + j][32 kb + 2 i + e] at [i][j][e]. For one block of
 * 16 outputs the tiles follow each other in kb, so row p of the block (64 bytes) is the
 * k-pair p of its 16 outputs: exactly what one AVX-512 BF16 dot product (vdpbf16ps) reads.
 * The same packed copy therefore serves two engines: the AMX tile unit (Intel Sapphire Rapids
 * and later) and, on CPUs with AVX-512 BF16 but no tiles (AMD Zen 4 and 5, Intel Cooper
 * Lake), zmm registers. Either way x is rounded to bfloat16 and each output element sums its
 * products in float32 in one fixed order whatever the number of rows: a row gets the same
 * bits alone or in a batch. */
#if defined(__x86_64__) && defined(__AVX512BF16__)
#define HAVE_BF16 1
#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
#define HAVE_AMX 1
#include <sys/syscall.h>
#else
#define HAVE_AMX 0
#endif

static int bf16_mode;    /* 0: none, 1: AMX tiles, 2: AVX-512 BF16 (clara_thinmm_bf16_init) */
static int bf16_on;      /* products run in bfloat16 (clara_thinmm_use_bf16) */
static int bf16_rows = 1; /* fewest rows a product needs to run in bfloat16 */
static int base_tiles;   /* packed base weights' tiles in use (clara_thinmm_use_base_tiles) */

static int keep_f16;      /* float16 data beside the bfloat16 copy (clara_thinmm_keep_f16) */

void clara_thinmm_set_bf16_rows(int rows) { bf16_rows = rows; }

/* A float16 decode copy (KIND_F16) of a weight the bfloat16 products take is read only while
 * they are off (clara_thinmm_use_bf16(0), or products of fewer than bf16_rows rows): unless
 * asked to keep it (1: comparisons with CPUs without bfloat16), only its bfloat16 copy is made
 * and those products read the float32 weights instead. */
void clara_thinmm_keep_f16(int keep) { keep_f16 = keep; }
static int f16_spared(int n, int k) {
  return bf16_mode && !keep_f16 && bf16_rows <= 1 && n % 32 == 0 && k % 32 == 0;
}

/* The engine this CPU gets: 1 AMX tiles (the kernel must allow this process the tile state,
 * Linux 5.16+: ARCH_REQ_XCOMP_PERM), else 2 AVX-512 BF16 (built with -march=native, so the
 * CPU has it); `no_amx` skips the tiles. */
int clara_thinmm_bf16_init(int no_amx) {
#if HAVE_AMX
  if (!no_amx && syscall(SYS_arch_prctl, 0x1023, 18) == 0) return bf16_on = bf16_mode = 1;
#else
  (void)no_amx;
#endif
  bf16_mode = 2;
  return bf16_on = bf16_mode;
}

/* Products in bfloat16 (1) or not (0: float32, as without it); copies already packed stay. */
void clara_thinmm_use_bf16(int on) { bf16_on = on && bf16_mode; }

/* Products against packed float32 base weights (KIND_F32P) that also have tiles
 * (clara_thinmm_add_tiles) run in bfloat16 (1) or on the float32 panels (0, the default).
 * The query encoder turns it on around its own passes only: the compressor's stay float32. */
void clara_thinmm_use_base_tiles(int on) { base_tiles = on; }

static inline unsigned short to_bf16(float f) { /* round to nearest even */
  unsigned int u;
  memcpy(&u, &f, 4);
  u += 0x7fff + ((u >> 16) & 1);
  return (unsigned short)(u >> 16);
}

/* Tiles of the n_out x k_sum operand whose element (j, s) is w[j * ld_out + s * ld_sum]. */
static void *bf16_pack_strided(const float *w, int n, int k, size_t ld_out, size_t ld_sum) {
  if (!bf16_mode || n % 32 != 0 || k % 32 != 0) return NULL;
  unsigned short *p = aligned_alloc(64, (size_t)n * k * 2);
  if (p == NULL) return NULL;
  int kbs = k / 32;
  for (int nb = 0; nb < n / 16; nb++)
    for (int kb = 0; kb < kbs; kb++) {
      unsigned short *tile = p + ((size_t)nb * kbs + kb) * 512;
      for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++) {
          const float *e = w + (size_t)(16 * nb + j) * ld_out + (size_t)(32 * kb + 2 * i) * ld_sum;
          tile[i * 32 + 2 * j] = to_bf16(e[0]);
          tile[i * 32 + 2 * j + 1] = to_bf16(e[ld_sum]);
        }
    }
  return p;
}

/* For x @ W^T (W: n x k): outputs are W's rows. */
static void *bf16_pack(const float *w, int n, int k) { return bf16_pack_strided(w, n, k, k, 1); }

/* For g @ W (W: n x k; a training step's backward through a frozen linear layer): outputs
 * are W's columns, sums run over its rows. */
static void *bf16_pack_nn(const float *w, int n, int k) {
  return bf16_pack_strided(w, k, n, 1, k);
}

typedef struct {
  int m, n, k, ldc;
  float alpha;
  const unsigned short *x; /* m rows (AMX: rounded up to 16 or 32) of k bfloat16s */
  const unsigned short *w; /* packed */
  float *c;
} bf16_args;

static inline void put16(float *o, __m512 v, float alpha) {
  _mm512_storeu_ps(o, alpha == 1.0f ? v : _mm512_mul_ps(_mm512_set1_ps(alpha), v));
}

/* AVX-512 BF16: MR rows of c times NB blocks of 32 columns. Each output is one chain of
 * vdpbf16ps over the k-pairs in order (whatever MR and NB: the same bits in any batch); NB > 1
 * gives few rows independent chains to overlap. */
static inline __attribute__((always_inline)) void dp_tile(const bf16_args *p, int q0, int b0,
                                                          const int MR, const int NB) {
  __m512 acc[8][4];
  const unsigned int *x = (const unsigned int *)(p->x + (size_t)q0 * p->k);
  const __m512i *w = (const __m512i *)(p->w + (size_t)b0 * 32 * p->k);
  size_t pairs = p->k / 2, xs = pairs, ws = (size_t)p->k; /* a 32-column block: 2 x k/2 rows */
#pragma GCC unroll 8
  for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
    for (int j = 0; j < 2 * NB; j++) acc[r][j] = _mm512_setzero_ps();
  for (size_t i = 0; i < pairs; i++) {
    __m512i b[4];
#pragma GCC unroll 4
    for (int j = 0; j < 2 * NB; j++) /* block j/2, its 16 outputs j%2 */
      b[j] = _mm512_load_si512(w + (size_t)(j >> 1) * ws + (size_t)(j & 1) * pairs + i);
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
      __m512bh xb = (__m512bh)_mm512_set1_epi32((int)x[(size_t)r * xs + i]);
#pragma GCC unroll 4
      for (int j = 0; j < 2 * NB; j++) acc[r][j] = _mm512_dpbf16_ps(acc[r][j], xb, (__m512bh)b[j]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
    for (int j = 0; j < 2 * NB; j++)
      put16(p->c + (size_t)(q0 + r) * p->ldc + 32 * b0 + 16 * j, acc[r][j], p->alpha);
}

#define DP_ROWS(MR, NB) \
  static void dp_##MR##_##NB(const bf16_args *p, int q0, int b0) { dp_tile(p, q0, b0, MR, NB); }
DP_ROWS(1, 2)
DP_ROWS(2, 2)
DP_ROWS(3, 2)
DP_ROWS(4, 2)
DP_ROWS(5, 1)
DP_ROWS(6, 1)
DP_ROWS(7, 1)
DP_ROWS(8, 1)
DP_ROWS(1, 1)
DP_ROWS(2, 1)
DP_ROWS(3, 1)
DP_ROWS(4, 1)
typedef void (*dp_fn)(const bf16_args *, int, int);
static const dp_fn dp_pairs[5] = {0, dp_1_2, dp_2_2, dp_3_2, dp_4_2};
static const dp_fn dp_single[9] = {0, dp_1_1, dp_2_1, dp_3_1, dp_4_1,
                                   dp_5_1, dp_6_1, dp_7_1, dp_8_1};

/* Columns [32 b0, 32 b1) of c, every row: a block's weights are read from cache for each
 * group of 8 rows after the first. */
static void dp_blocks(const void *ctx, int b0, int b1) {
  const bf16_args *p = ctx;
  for (int b = b0; b < b1;) {
    int pair = p->m <= 4 && b + 1 < b1;
    for (int q = 0; q < p->m; q += 8) {
      int mr = p->m - q < 8 ? p->m - q : 8;
      (pair ? dp_pairs : dp_single)[mr](p, q, b);
    }
    b += pair ? 2 : 1;
  }
}

#if HAVE_AMX
typedef struct {
  unsigned char palette, start_row, reserved[14];
  unsigned short colsb[16];
  unsigned char rows[16];
} __attribute__((packed)) tile_config;
static __thread int amx_configured;

static void amx_configure(void) {
  if (amx_configured) return;
  tile_config cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.palette = 1;
  for (int t = 0; t < 8; t++) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  _tile_loadconfig(&cfg);
  amx_configured = 1;
}

/* Rows [q0, q0 + rows) of a 16 x 16 accumulator tile (stored in `spill`) into c at column c0. */
static void amx_put(const bf16_args *p, const float *spill, int q0, int rows, int c0) {
  for (int q = 0; q < rows; q++) {
    float *o = p->c + (size_t)(q0 + q) * p->ldc + c0;
    if (p->alpha == 1.0f)
      memcpy(o, spill + 16 * q, 64);
    else
      for (int j = 0; j < 16; j++) o[j] = p->alpha * spill[16 * q + j];
  }
}

/* Columns [32 b0, 32 b1) of c, every row. */
static void amx_blocks(const void *ctx, int b0, int b1) {
  const bf16_args *p = ctx;
  int k = p->k, kbs = k / 32;
  float spill[16 * 16];
  amx_configure();
  for (int b = b0; b < b1; b++) {
    const unsigned short *w0 = p->w + (size_t)(2 * b) * kbs * 512, *w1 = w0 + (size_t)kbs * 512;
    if (p->m <= 16) { /* a decode step: one tile of rows, no tile of zeros to multiply */
      _tile_zero(0);
      _tile_zero(1);
      for (int kb = 0; kb < kbs; kb++) {
        _tile_loadd(4, p->x + 32 * kb, k * 2);
        _tile_loadd(6, w0 + (size_t)kb * 512, 64);
        _tile_loadd(7, w1 + (size_t)kb * 512, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
      }
      _tile_stored(0, spill, 64);
      amx_put(p, spill, 0, p->m, 32 * b);
      _tile_stored(1, spill, 64);
      amx_put(p, spill, 0, p->m, 32 * b + 16);
      continue;
    }
    for (int r0 = 0; r0 < p->m; r0 += 32) {
      const unsigned short *x0 = p->x + (size_t)r0 * k, *x1 = x0 + (size_t)16 * k;
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      for (int kb = 0; kb < kbs; kb++) {
        _tile_loadd(4, x0 + 32 * kb, k * 2);
        _tile_loadd(5, x1 + 32 * kb, k * 2);
        _tile_loadd(6, w0 + (size_t)kb * 512, 64);
        _tile_loadd(7, w1 + (size_t)kb * 512, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      }
      for (int t = 0; t < 4; t++) {
        int q0 = r0 + 16 * (t >> 1), c0 = 32 * b + 16 * (t & 1);
        int rows = p->m - q0 < 16 ? p->m - q0 : 16;
        if (rows <= 0) continue;
        switch (t) { /* tile numbers must be constants */
          case 0: _tile_stored(0, spill, 64); break;
          case 1: _tile_stored(1, spill, 64); break;
          case 2: _tile_stored(2, spill, 64); break;
          default: _tile_stored(3, spill, 64); break;
        }
        amx_put(p, spill, q0, rows, c0);
      }
    }
  }
}
#endif

static __thread unsigned short *x_buf;
static __thread size_t x_cap;

/* c = alpha * a @ B in bfloat16 (B packed by bf16_pack or bf16_pack_nn); 0 when it cannot (no
 * memory). */
static int bf16_gemm(int m, int n, int k, float alpha, const float *a, int lda,
                     const unsigned short *packed, float *c, int ldc) {
  size_t rows = bf16_mode == 1 ? (m <= 16 ? 16 : ((size_t)m + 31) / 32 * 32) : (size_t)m;
  size_t need = rows * k;
  if (need > x_cap) {
    free(x_buf);
    x_buf = aligned_alloc(64, need * 2);
    x_cap = x_buf != NULL ? need : 0;
    if (x_buf == NULL) return 0;
  }
  for (int q = 0; q < m; q++) {
    const float *row = a + (size_t)q * lda;
    unsigned short *out = x_buf + (size_t)q * k;
    for (int j = 0; j < k; j += 32) {
      __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(row + j + 16), _mm512_loadu_ps(row + j));
      _mm512_storeu_si512(out + j, (__m512i)v);
    }
  }
  memset(x_buf + (size_t)m * k, 0, (rows - m) * k * 2);
  bf16_args p = {m, n, k, ldc, alpha, x_buf, packed, c};
#if HAVE_AMX
  if (bf16_mode == 1) {
    parallel_blocks(amx_blocks, &p, n / 32, 1);
    return 1;
  }
#endif
  parallel_blocks(dp_blocks, &p, n / 32, (size_t)n * k * (m < 8 ? m : 8) >= 65536);
  return 1;
}
#else
#define HAVE_BF16 0
#define HAVE_AMX 0
void clara_thinmm_use_base_tiles(int on) { (void)on; }
int clara_thinmm_bf16_init(int no_amx) {
  (void)no_amx;
  return 0;
}
void clara_thinmm_set_bf16_rows(int rows) { (void)rows; }
void clara_thinmm_use_bf16(int on) { (void)on; }
void clara_thinmm_keep_f16(int keep) { (void)keep; }
static int f16_spared(int n, int k) {
  (void)n, (void)k;
  return 0;
}
static void *bf16_pack(const float *w, int n, int k) {
  (void)w, (void)n, (void)k;
  return NULL;
}
static void *bf16_pack_nn(const float *w, int n, int k) {
  (void)w, (void)n, (void)k;
  return NULL;
}
#endif

/* Compact copies of decode weights, found by the float32 array's address and shape: float16,
 * or int8 with one float32 scale per row (w[r][j] ~ scale[r] * q[r][j]). clara/_blas.py
 * registers only weights that decoding alone reads (the merged adapter copies, the output
 * embedding) and holds each float32 array while its entry lives, so an address cannot be
 * reused under a live entry. Lookups run on MLX's thread without a lock: a product counts
 * itself in `active` before it looks, and a dropped copy is freed only once no product is
 * running (both sides sequentially consistent: a product either misses the entry or is
 * counted). */
enum { KIND_F16 = 1, KIND_I8 = 2, KIND_AMX = 3, KIND_F32P = 4 }; /* AMX: the tiles only
                                                             (training); F32P: float32 panels */
#define MAX_COPIES 8192
typedef struct {
  const float *w;
  int n, k, kind;
  void *data;     /* float16: panels of 16 outputs (f16p_pack); int8: n * k, row-major */
  float *scale;   /* int8: n row scales, inside the same allocation */
  void *packed;   /* float16 and AMX entries: the bfloat16 tiles for x @ W^T, or NULL */
  void *packed_nn; /* AMX entries: the tiles for g @ W */
  float *panels;   /* float16 and int8 entries: float32 panels (as KIND_F32P's) for products
                      wider than the thin kernel takes (prefill), or NULL */
} copy_entry;
static copy_entry table[MAX_COPIES];
static int used;
static int active;
static void *retired[MAX_COPIES];
static int n_retired;
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;

static void reap_locked(void) {
  if (n_retired == 0 || __atomic_load_n(&active, __ATOMIC_SEQ_CST) != 0) return;
  for (int i = 0; i < n_retired; i++) free(retired[i]);
  n_retired = 0;
}

static void *make_copy(const float *w, int n, int k, int kind, float **scale) {
  size_t count = (size_t)n * k;
  if (kind == KIND_F16) {
    *scale = NULL;
    return HAVE_HALF ? f16p_pack(w, n, k) : NULL;
  }
  /* int8: scales first (float alignment), then the rows */
  char *block = malloc((size_t)n * sizeof(float) + count);
  if (block == NULL) return NULL;
  float *s = (float *)block;
  signed char *q = (signed char *)(block + (size_t)n * sizeof(float));
  for (int r = 0; r < n; r++) {
    const float *row = w + (size_t)r * k;
    float amax = 0.0f;
    for (int j = 0; j < k; j++) amax = fabsf(row[j]) > amax ? fabsf(row[j]) : amax;
    s[r] = amax / 127.0f;
    float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    for (int j = 0; j < k; j++) q[(size_t)r * k + j] = (signed char)lrintf(row[j] * inv);
  }
  *scale = s;
  return block;
}

/* 1: `w` (n x k, row-major) now has a copy of `kind`; 0: none could be made. */
int clara_thinmm_add_copy(const float *w, int n, int k, int kind) {
  int ok = 0, slot = -1;
  pthread_mutex_lock(&table_lock);
  reap_locked();
  for (int i = 0; i < used; i++) {
    if (table[i].w == w) {
      ok = table[i].n == n && table[i].k == k && table[i].kind == kind;
      goto done;
    }
    if (table[i].w == NULL && slot < 0) slot = i;
  }
  if (slot < 0 && used == MAX_COPIES) goto done;
  float *scale = NULL;
  void *data = NULL, *packed = NULL, *packed_nn = NULL;
  if (kind == KIND_F32P) {
    if (n % 32 != 0 || (data = f32p_pack(w, n, k)) == NULL) goto done;
  } else if (kind == KIND_AMX) {
    packed = bf16_pack(w, n, k);
    packed_nn = bf16_pack_nn(w, n, k);
    if (packed == NULL || packed_nn == NULL) {
      free(packed);
      free(packed_nn);
      goto done;
    }
  } else if (kind == KIND_F16 && f16_spared(n, k)) { /* the bfloat16 copy alone */
    if ((packed = bf16_pack(w, n, k)) == NULL) goto done;
  } else {
    data = make_copy(w, n, k, kind, &scale);
    if (data == NULL) goto done;
    packed = kind == KIND_F16 ? bf16_pack(w, n, k) : NULL;
  }
  if (slot < 0) slot = used;
  table[slot].n = n;
  table[slot].k = k;
  table[slot].kind = kind;
  table[slot].data = kind == KIND_I8 ? (void *)((char *)data + (size_t)n * sizeof(float)) : data;
  table[slot].scale = scale;
  table[slot].packed = packed;
  table[slot].packed_nn = packed_nn;
  table[slot].panels = NULL;
  __atomic_store_n(&table[slot].w, w, __ATOMIC_SEQ_CST);
  if (slot == used) __atomic_store_n(&used, used + 1, __ATOMIC_SEQ_CST);
  ok = 1;
done:
  pthread_mutex_unlock(&table_lock);
  return ok;
}

void clara_thinmm_drop_copy(const float *w) {
  pthread_mutex_lock(&table_lock);
  for (int i = 0; i < used; i++)
    if (table[i].w == w) {
      __atomic_store_n(&table[i].w, NULL, __ATOMIC_SEQ_CST);
      void *blocks[4] = {table[i].kind == KIND_I8 ? (void *)table[i].scale : table[i].data,
                         table[i].packed, table[i].packed_nn, table[i].panels};
      for (int b = 0; b < 4; b++)
        if (blocks[b] != NULL && n_retired < MAX_COPIES) retired[n_retired++] = blocks[b];
      table[i].panels = NULL;
      table[i].packed = NULL;
      table[i].packed_nn = NULL;
      table[i].data = NULL;
      table[i].scale = NULL;
    }
  reap_locked();
  pthread_mutex_unlock(&table_lock);
}

/* 1: the float32-panel copy of `w` (KIND_F32P) now also has bfloat16 tiles for x @ W^T, used
 * while clara_thinmm_use_base_tiles(1); 0: no such copy, no AMX, or no memory. */
int clara_thinmm_add_tiles(const float *w) {
  int ok = 0;
  pthread_mutex_lock(&table_lock);
  for (int i = 0; i < used; i++)
    if (table[i].w == w && table[i].kind == KIND_F32P) {
      if (table[i].packed == NULL) {
        void *tiles = bf16_pack(w, table[i].n, table[i].k);
        __atomic_store_n(&table[i].packed, tiles, __ATOMIC_SEQ_CST);
      }
      ok = table[i].packed != NULL;
      break;
    }
  pthread_mutex_unlock(&table_lock);
  return ok;
}

/* 1: the float16 or int8 copy of `w` now also has float32 panels, read by products of more
 * rows than the thin kernel takes (a prefill through merged decode weights) instead of
 * OpenBLAS packing `w` on every call; 0: no such copy, no packed kernel, or no memory. */
int clara_thinmm_add_panels(const float *w) {
  int ok = 0, n = 0, k = 0;
  pthread_mutex_lock(&table_lock);
  for (int i = 0; i < used; i++)
    if (table[i].w == w && (table[i].kind == KIND_F16 || table[i].kind == KIND_I8)) {
      ok = table[i].panels != NULL;
      if (!ok && HAVE_F32P && table[i].n % 32 == 0) n = table[i].n, k = table[i].k;
      break;
    }
  pthread_mutex_unlock(&table_lock);
  if (ok || n == 0) return ok;
  /* packed outside the lock (~0.4 GiB for the default model): other owners' updates go on */
  float *panels = f32p_pack(w, n, k);
  if (panels == NULL) return 0;
  pthread_mutex_lock(&table_lock);
  for (int i = 0; i < used; i++)
    if (table[i].w == w && table[i].n == n && table[i].k == k &&
        (table[i].kind == KIND_F16 || table[i].kind == KIND_I8)) {
      if (table[i].panels == NULL) {
        __atomic_store_n(&table[i].panels, panels, __ATOMIC_RELEASE);
        panels = NULL;
      }
      ok = 1;
      break;
    }
  pthread_mutex_unlock(&table_lock);
  free(panels); /* NULL unless another call stored its own first, or the copy went */
  return ok;
}

int clara_thinmm_copies(void) {
  int count = 0;
  pthread_mutex_lock(&table_lock);
  reap_locked();
  for (int i = 0; i < used; i++) count += table[i].w != NULL;
  pthread_mutex_unlock(&table_lock);
  return count;
}

static const copy_entry *find_copy(const float *w, int n, int k, int ldw) {
  if (ldw != k) return NULL;
  int n_used = __atomic_load_n(&used, __ATOMIC_SEQ_CST);
  for (int i = 0; i < n_used; i++)
    if (__atomic_load_n(&table[i].w, __ATOMIC_SEQ_CST) == w && table[i].n == n &&
        table[i].k == k)
      return &table[i];
  return NULL;
}

void cblas_sgemm(int order, int trans_a, int trans_b, int m, int n, int k, float alpha,
                 const float *a, int lda, const float *b, int ldb, float beta, float *c,
                 int ldc) {
#if HAVE_BF16
  /* x @ W^T reads W as n x k (tiles `packed`); g @ W, the backward, reads W as k x n
   * (`packed_nn`): either way a registered weight of n_w x k_w. */
  int nt = trans_b == TRANS;
  if (bf16_on && m >= bf16_rows && order == ROW_MAJOR && trans_a == NO_TRANS &&
      (nt || trans_b == NO_TRANS) && beta == 0.0f && k % 32 == 0 && n % 32 == 0 &&
      ldb == (nt ? k : n)) {
    __atomic_add_fetch(&active, 1, __ATOMIC_SEQ_CST);
    const copy_entry *e = nt ? find_copy(b, n, k, ldb) : find_copy(b, k, n, ldb);
    const void *tiles = e == NULL ? NULL : nt ? e->packed : e->packed_nn;
    if (e != NULL && e->kind == KIND_F32P && !base_tiles) tiles = NULL; /* float32 panels */
    int done = tiles != NULL &&
               bf16_gemm(m, n, k, alpha, a, lda, (const unsigned short *)tiles, c, ldc);
    __atomic_sub_fetch(&active, 1, __ATOMIC_SEQ_CST);
    if (done) return;
  }
#endif
  if (HAVE_F32P && order == ROW_MAJOR && trans_a == NO_TRANS && trans_b == TRANS &&
      m > thin_rows && beta == 0.0f && k > 0) {
    __atomic_add_fetch(&active, 1, __ATOMIC_SEQ_CST);
    const copy_entry *e = find_copy(b, n, k, ldb);
    const float *panels = e == NULL                ? NULL
                          : e->kind == KIND_F32P ? (const float *)e->data
                                                 : __atomic_load_n(&e->panels, __ATOMIC_ACQUIRE);
    int done = panels != NULL;
    if (done) f32p_gemm(m, n, k, alpha, a, lda, panels, c, ldc);
    __atomic_sub_fetch(&active, 1, __ATOMIC_SEQ_CST);
    if (done) return;
  }
  if (order == ROW_MAJOR && trans_a == NO_TRANS && trans_b == TRANS && m <= thin_rows && k > 0) {
    __atomic_add_fetch(&active, 1, __ATOMIC_SEQ_CST);
    const copy_entry *e = find_copy(b, n, k, ldb);
    if (e == NULL || e->kind == KIND_AMX || e->kind == KIND_F32P || e->data == NULL)
      f32_thin(m, n, k, alpha, a, lda, b, ldb, NULL, beta, c, ldc);
    else if (e->kind == KIND_F16)
      f16_thin(m, n, k, alpha, a, lda, (const half *)e->data, beta, c, ldc);
    else
      i8_thin(m, n, k, alpha, a, lda, (const signed char *)e->data, k, e->scale, beta, c, ldc);
    __atomic_sub_fetch(&active, 1, __ATOMIC_SEQ_CST);
    return;
  }
  fallback(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
