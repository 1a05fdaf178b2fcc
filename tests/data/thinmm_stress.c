/* Stress driver for clara/_thinmm.c's helper pool (tests/test_thinmm.py): products of
 * different widths back to back, with more helpers than cores, for `seconds`; then one product
 * checked against a plain loop. Before the pool's claim fix, this hung within seconds. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

void cblas_sgemm(int order, int ta, int tb, int m, int n, int k, float alpha, const float *a,
                 int lda, const float *b, int ldb, float beta, float *c, int ldc);
void clara_thinmm_set_threads(int n);

int main(int argc, char **argv) {
  if (argc != 3) return 2;
  int helpers = atoi(argv[1]);
  double seconds = atof(argv[2]);
  enum { K = 256, N = 1040 };
  int widths[3] = {256, N, 512}; /* all wide enough to be shared with the helpers */
  float *a = malloc(sizeof(float) * K), *w = malloc(sizeof(float) * N * K);
  float *c = malloc(sizeof(float) * N);
  for (int i = 0; i < N * K; i++) w[i] = (float)(i % 7) - 3.0f;
  for (int i = 0; i < K; i++) a[i] = (float)(i % 5) - 2.0f;
  clara_thinmm_set_threads(helpers + 1);
  struct timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  long products = 0;
  for (;;) {
    for (int j = 0; j < 3; j++)
      cblas_sgemm(101, 111, 112, 1, widths[j], K, 1.0f, a, K, w, K, 0.0f, c, widths[j]);
    products += 3;
    clock_gettime(CLOCK_MONOTONIC, &t);
    if (t.tv_sec - t0.tv_sec + (t.tv_nsec - t0.tv_nsec) * 1e-9 > seconds) break;
  }
  cblas_sgemm(101, 111, 112, 1, N, K, 1.0f, a, K, w, K, 0.0f, c, N);
  for (int r = 0; r < N; r++) {
    double want = 0;
    for (int j = 0; j < K; j++) want += (double)a[j] * w[r * K + j];
    if (fabs(c[r] - want) > 1e-3) {
      printf("column %d: %f, want %f\n", r, c[r], want);
      return 1;
    }
  }
  printf("%ld products\n", products);
  return 0;
}
