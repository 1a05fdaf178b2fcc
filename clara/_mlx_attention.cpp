// clara's attention as MLX primitives (MLX's CPU backend).
//
// Attention through MLX's ops is ~15 small ops a layer (scale, transposes, two batched
// matmuls that MLX runs as one BLAS call per batch entry and head, the mask, max, exp, sum,
// divide): on the 2-core test machine a third of a batch-1 decode step of the default model.
// Here it is one op. Its eval_cpu queues one task on the stream, which calls a kernel of
// clara/_attention.c (in the thin-matmul library; the addresses are handed over by `init`):
// `attention_rows`, a decode step's few rows against the KV caches as they are kept, through
// clara_attention_rows; `attention_blocks`, a prompt's rows through clara_attention, with the
// keys transposed as it reads them. The kernels only read arrays, so nothing waits: a decode
// step is still queued before the previous token is read.
//
// Built on first use against the MLX wheel's own headers and libmlx, with the nanobind
// release whose ABI the wheel's bindings use (clara/_mlxext.py).

#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>

#include <cstdint>
#include <optional>
#include <stdexcept>

#include "mlx/allocator.h"
#include "mlx/array.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/ops.h"
#include "mlx/primitives.h"
#include "mlx/stream.h"
#include "mlx/utils.h"

namespace nb = nanobind;
namespace mx = mlx::core;

using rows_fn = int (*)(int, int, int, int, int, int, const float*, long, long, long,
                        const float*, long, long, long, const float*, long, long, long,
                        const unsigned char*, long, long, long, long, int, int, float, float*);
using blocks_fn = int (*)(int, int, int, int, int, int, const float*, long, long, long,
                          const float*, long, long, long, const float*, long, long, long,
                          const unsigned char*, long, long, long, int, int, float, float*);
static rows_fn kernel = nullptr;
static blocks_fn blocks_kernel = nullptr;

namespace {

// blocks: a prompt's rows through clara_attention (tiles of rows, online softmax, the
// causal triangle skipped), output (B, T, H, D); else a decode step's few rows through
// clara_attention_rows, output (B, H, T, D).
class Attention : public mx::Primitive {
 public:
  Attention(mx::Stream stream, float scale, bool causal, bool blocks)
      : mx::Primitive(stream), scale_(scale), causal_(causal), blocks_(blocks) {}

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    const mx::array &q = inputs[0], &k = inputs[1], &v = inputs[2];
    mx::array& out = outputs[0];
    out.set_data(mx::allocator::malloc(out.nbytes()));
    auto& enc = mx::cpu::get_command_encoder(stream());
    for (auto& a : inputs) enc.set_input_array(a);
    enc.set_output_array(out);
    bool masked = inputs.size() > 3;
    enc.dispatch([q = mx::array::unsafe_weak_copy(q), k = mx::array::unsafe_weak_copy(k),
                  v = mx::array::unsafe_weak_copy(v),
                  m = masked ? mx::array::unsafe_weak_copy(inputs[3]) : q,
                  out = mx::array::unsafe_weak_copy(out), masked, scale = scale_,
                  causal = causal_, blocks = blocks_]() mutable {
      // The last axis must be contiguous; graph building saw only default strides, so a
      // view that turned out otherwise is copied here (not seen in practice: RoPE's output
      // and the caches' slices keep it).
      std::vector<float> copies[3];
      const float* data[3];
      long strides[3][3];
      const mx::array* arrays[3] = {&q, &k, &v};
      for (int i = 0; i < 3; i++) {
        const mx::array& a = *arrays[i];
        const float* base = a.data<float>();
        if (a.strides()[3] == 1) {
          data[i] = base;
          for (int d = 0; d < 3; d++) strides[i][d] = static_cast<long>(a.strides()[d]);
          continue;
        }
        int n0 = a.shape(0), n1 = a.shape(1), n2 = a.shape(2), n3 = a.shape(3);
        copies[i].resize(static_cast<size_t>(n0) * n1 * n2 * n3);
        float* out = copies[i].data();
        for (int x = 0; x < n0; x++)
          for (int y = 0; y < n1; y++)
            for (int z = 0; z < n2; z++)
              for (int w = 0; w < n3; w++)
                *out++ = base[x * a.strides()[0] + y * a.strides()[1] + z * a.strides()[2] +
                              w * a.strides()[3]];
        data[i] = copies[i].data();
        long row = n3, plane = static_cast<long>(n2) * n3;
        strides[i][0] = plane * n1, strides[i][1] = plane, strides[i][2] = row;
      }
      int B = q.shape(0), H = q.shape(1), T = q.shape(2), D = q.shape(3);
      int Hk = k.shape(1), S = k.shape(2);
      auto st = [](const mx::array& a, int i) { return static_cast<long>(a.strides()[i]); };
      const unsigned char* mp = nullptr;
      long ms[4] = {0, 0, 0, 0};
      if (masked) {  // (B | 1, H | 1, T | 1, S), broadcast axes read with stride 0
        mp = reinterpret_cast<const unsigned char*>(m.data<bool>());
        for (int i = 0; i < 4; i++) ms[i] = m.shape(i) == 1 ? 0 : st(m, i);
      }
      if (blocks) {  // the keys transposed, (B, Hk, D, S rounded up to 64), as it reads them
        long Sp = (S + 63) / 64 * 64;
        std::vector<float> kt(static_cast<size_t>(B) * Hk * D * Sp, 0.0f);
        for (int b = 0; b < B; b++)
          for (int h = 0; h < Hk; h++) {
            const float* src = data[1] + b * strides[1][0] + h * strides[1][1];
            float* dst = kt.data() + (static_cast<long>(b) * Hk + h) * D * Sp;
            for (int j = 0; j < S; j++)
              for (int d = 0; d < D; d++) dst[d * Sp + j] = src[j * strides[1][2] + d];
          }
        int done = blocks_kernel(B, H, Hk, T, S, D, data[0], strides[0][0], strides[0][1],
                                 strides[0][2], kt.data(), Hk * D * Sp, D * Sp, Sp, data[2],
                                 strides[2][0], strides[2][1], strides[2][2], mp, ms[0], ms[1],
                                 ms[2], causal ? 1 : 0, S - T, scale, out.data<float>());
        if (!done) throw std::runtime_error("clara_attention: shapes it does not take");
        return;
      }
      int done = kernel(B, H, Hk, T, S, D, data[0], strides[0][0], strides[0][1],
                        strides[0][2], data[1], strides[1][0], strides[1][1], strides[1][2],
                        data[2], strides[2][0], strides[2][1], strides[2][2], mp, ms[0], ms[1],
                        ms[2], ms[3], causal ? 1 : 0, S - T, scale, out.data<float>());
      if (!done) throw std::runtime_error("clara_attention_rows: shapes it does not take");
    });
  }

  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override {
    throw std::runtime_error("clara's attention ops run on the CPU only");
  }

  const char* name() const override { return "ClaraAttention"; }

  bool is_equivalent(const mx::Primitive& other) const override {
    auto& o = static_cast<const Attention&>(other);
    return scale_ == o.scale_ && causal_ == o.causal_ && blocks_ == o.blocks_;
  }

 private:
  float scale_;
  bool causal_;
  bool blocks_;
};

// The array as float32 (the kernel copies one whose last axis is not contiguous).
mx::array rows_ready(const mx::array& a, mx::Stream s) {
  return a.dtype() == mx::float32 ? a : mx::astype(a, mx::float32, s);
}

}  // namespace

static mx::array make(const mx::array& q, const mx::array& k, const mx::array& v,
               std::optional<mx::array> mask, float scale, bool causal, bool blocks) {
  if (kernel == nullptr || blocks_kernel == nullptr)
    throw std::runtime_error("clara attention: init() not called");
  auto s = mx::default_stream(mx::default_device());
  std::vector<mx::array> inputs = {rows_ready(q, s), rows_ready(k, s), rows_ready(v, s)};
  if (mask) {  // row-contiguous bytes: the kernels read each row's keys in a run
    mx::array b = mx::astype(*mask, mx::bool_, s);
    while (b.ndim() < 4) b = mx::expand_dims(b, 0, s);
    inputs.push_back(mx::contiguous(b, false, s));
  }
  auto prim = std::make_shared<Attention>(s, scale, causal, blocks);
  if (!blocks) return mx::array(q.shape(), mx::float32, std::move(prim), std::move(inputs));
  mx::Shape shape = {q.shape(0), q.shape(2), q.shape(1), q.shape(3)};  // (B, T, H, D)
  mx::array out(shape, mx::float32, std::move(prim), std::move(inputs));
  return mx::transpose(out, {0, 2, 1, 3}, s);
}

NB_MODULE(_mlx_attention, m) {
  m.def(
      "init",
      [](std::uintptr_t rows, std::uintptr_t blocks) {
        kernel = reinterpret_cast<rows_fn>(rows);
        blocks_kernel = reinterpret_cast<blocks_fn>(blocks);
      },
      "Hand over the addresses of clara_attention_rows and clara_attention (_attention.c).");
  const char* doc =
      "softmax(q k^T * scale + mask) v for q (B, H, T, D), k and v (B, Hk, S, D) float32; mask "
      "None or boolean, broadcastable to (B, H, T, S); causal: row t sees keys up to S - T + t.";
  // attention_rows: a decode step's few rows; attention_blocks: a prompt's rows
  for (auto [name, blocks] : {std::pair{"attention_rows", false}, {"attention_blocks", true}})
    m.def(
        name,
        [blocks](const mx::array& q, const mx::array& k, const mx::array& v,
                 std::optional<mx::array> mask, float scale, bool causal) {
          return make(q, k, v, mask, scale, causal, blocks);
        },
        nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("mask").none(), nb::arg("scale"),
        nb::arg("causal"), doc);
}
