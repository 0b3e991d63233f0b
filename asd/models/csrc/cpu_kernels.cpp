// Fused CPU kernels for the CNN's training step (asd/models/cpu_kernels.py builds and calls them).
//
// Every map is a channels-last tensor read as contiguous rows of C channels. Each kernel does in one
// or two passes over memory what PyTorch's CPU kernels do in several (batch statistics, normalise,
// ReLU, max-pool and their gradients), in float32 arithmetic for float32 and bfloat16 storage.
// Statistics are summed in float32 over blocks of at most 256 rows and in double across blocks.
// The channel counts of the CNN (16, 32, 64, 128) are compile-time constants, so a row is a few
// whole vector registers; other counts take the same code with a run-time count.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace {

constexpr int64_t kBlock = 256;  // rows summed in float32 before a double accumulation
constexpr int64_t kGrain = kBlock * 16;  // rows per parallel task

// Storage <-> float32. bfloat16 by its bits, so the loops vectorise (round to nearest even, NaN kept).
struct F32 {
  using T = float;
  static inline float load(float v) { return v; }
  static inline float store(float v) { return v; }
};
struct BF16 {
  using T = uint16_t;
  static inline float load(uint16_t v) {
    uint32_t u = uint32_t(v) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  static inline uint16_t store(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    const uint32_t nan = 0u - uint32_t(f != f);  // all ones for NaN: branch-free, so the loops vectorise
    return uint16_t((rounded & ~nan) | (0x7FC0u & nan));
  }
};

template <typename S>
typename S::T* ptr(const at::Tensor& t) {
  return reinterpret_cast<typename S::T*>(t.data_ptr());
}

inline float relu(float v) { return v < 0.f ? 0.f : v; }  // NaN stays NaN, as torch.relu

// Calls f(S{}, std::integral_constant<int64_t, kC>{}) for the storage type and channel count of x.
template <typename F>
void dispatch(const at::Tensor& x, int64_t c, F f) {
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16, "asd_cpu: float32 or bfloat16 maps");
  auto by_channels = [&](auto s) {
    switch (c) {
      case 16: return f(s, std::integral_constant<int64_t, 16>{});
      case 32: return f(s, std::integral_constant<int64_t, 32>{});
      case 64: return f(s, std::integral_constant<int64_t, 64>{});
      case 128: return f(s, std::integral_constant<int64_t, 128>{});
      default: return f(s, std::integral_constant<int64_t, 0>{});
    }
  };
  if (x.scalar_type() == at::kBFloat16)
    by_channels(BF16{});
  else
    by_channels(F32{});
}

void check_rows(const at::Tensor& x, const char* name, int64_t dims = -1) {
  TORCH_CHECK(x.device().is_cpu() && x.is_contiguous() && x.dim() >= 2, name, ": a contiguous CPU tensor of rows");
  TORCH_CHECK(dims < 0 || x.dim() == dims, name, ": ", dims, " dimensions");
}

void check_like(const at::Tensor& t, const at::Tensor& like, const char* name) {
  TORCH_CHECK(t.is_contiguous() && t.sizes() == like.sizes() && t.scalar_type() == like.scalar_type(), name,
              ": contiguous, with the shape and dtype of the map it belongs to");
}

// Per-channel sums of two quantities over rows [0, n): term(r, j, a, q) gives both for row r,
// channel j. Float32 within blocks of kBlock rows, double across blocks and threads.
template <int64_t kC, typename Term>
void channel_sums(int64_t n, int64_t c_run, Term term, std::vector<double>& first, std::vector<double>& second) {
  const int64_t c = kC > 0 ? kC : c_run;
  const int threads = at::get_num_threads();
  std::vector<double> p1(size_t(threads) * c, 0.0), p2(size_t(threads) * c, 0.0);
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
    const int t = at::get_thread_num();
    std::vector<float> s1_v(c), s2_v(c);
    float* __restrict s1 = s1_v.data();
    float* __restrict s2 = s2_v.data();
    for (int64_t b = begin; b < end; b += kBlock) {
      std::fill(s1, s1 + c, 0.f);
      std::fill(s2, s2 + c, 0.f);
      const int64_t stop = std::min(end, b + kBlock);
      for (int64_t r = b; r < stop; ++r) {
#pragma omp simd
        for (int64_t j = 0; j < c; ++j) {
          float a, q;
          term(r, j, a, q);
          s1[j] += a;
          s2[j] += q;
        }
      }
      for (int64_t j = 0; j < c; ++j) {
        p1[t * c + j] += s1[j];
        p2[t * c + j] += s2[j];
      }
    }
  });
  first.assign(c, 0.0);
  second.assign(c, 0.0);
  for (int t = 0; t < threads; ++t)
    for (int64_t j = 0; j < c; ++j) {
      first[j] += p1[t * c + j];
      second[j] += p2[t * c + j];
    }
}

// Batch statistics of x (n x c): mean, biased variance, 1 / sqrt(var + eps); the normalisation is
// (x - shift) * scale, shift = mean, scale = invstd (subtracting first keeps it exact where
// |mean| >> std, as PyTorch's kernels do).
struct Stats {
  std::vector<float> scale, shift;
};

template <typename S, int64_t kC>
Stats batch_stats(const typename S::T* __restrict x, int64_t n, int64_t c, double eps, at::Tensor& mean,
                  at::Tensor& invstd, at::Tensor& var) {
  // Sums of x - k and (x - k)^2 with k = the first row: the variance is then a small difference only
  // when the mean is far from k in units of the standard deviation, not whenever |mean| >> std (as
  // E[x^2] - mean^2 would be; a residual stream's channels can have such means).
  std::vector<float> k_v(c);
  for (int64_t j = 0; j < c; ++j) k_v[j] = S::load(x[j]);
  const float* __restrict k = k_v.data();
  std::vector<double> sum, sq;
  channel_sums<kC>(n, c, [=](int64_t r, int64_t j, float& a, float& q) {
    const float d = S::load(x[r * c + j]) - k[j];
    a = d;
    q = d * d;
  }, sum, sq);
  Stats st{std::vector<float>(c), std::vector<float>(c)};
  float* m = mean.data_ptr<float>();
  float* is = invstd.data_ptr<float>();
  float* vr = var.data_ptr<float>();
  for (int64_t j = 0; j < c; ++j) {
    const double shift = sum[j] / double(n);
    const double v = std::max(sq[j] / double(n) - shift * shift, 0.0);
    m[j] = float(k[j] + shift);
    vr[j] = float(v);
    is[j] = float(1.0 / std::sqrt(v + eps));
    st.scale[j] = is[j];
    st.shift[j] = m[j];
  }
  return st;
}

Stats saved_stats(const at::Tensor& mean, const at::Tensor& invstd) {
  const int64_t c = mean.numel();
  const float* m = mean.data_ptr<float>();
  const float* is = invstd.data_ptr<float>();
  return Stats{std::vector<float>(is, is + c), std::vector<float>(m, m + c)};
}

// Per-channel count, mean and sum of squared deviations, merged group by group (Chan et al.'s
// pairwise update) in double: each group's own mean and deviations are exact in float32 (a group is
// one cache-resident block), and no single row's value, however far out, sets a shift for the rest.
struct Moments {
  double n = 0;
  std::vector<double> mean, m2;
  explicit Moments(int64_t c) : mean(c, 0.0), m2(c, 0.0) {}
  void merge(double nb, const double* mean_b, const double* m2_b) {
    const double total = n + nb;
    for (size_t j = 0; j < mean.size(); ++j) {
      const double delta = mean_b[j] - mean[j];
      m2[j] += m2_b[j] + delta * delta * n * nb / total;
      mean[j] += delta * nb / total;
    }
    n = total;
  }
  // mean, biased variance and 1 / sqrt(var + eps) into float32 outputs
  void write(double eps, float* m, float* var, float* invstd) const {
    for (size_t j = 0; j < mean.size(); ++j) {
      const double v = m2[j] / n;
      m[j] = float(mean[j]);
      var[j] = float(v);
      if (invstd) invstd[j] = float(1.0 / std::sqrt(v + eps));
    }
  }
};

// ---- BatchNorm (batch statistics, no affine) -> ReLU, optionally returning the normalised map ------

template <typename S, int64_t kC>
void bn_relu_forward_impl(const at::Tensor& x, double eps, at::Tensor& normed, at::Tensor& out, at::Tensor& mean,
                          at::Tensor& invstd, at::Tensor& var) {
  const int64_t c = kC > 0 ? kC : x.size(-1), n = x.numel() / c;
  const auto* __restrict xp = ptr<S>(x);
  const Stats st = batch_stats<S, kC>(xp, n, c, eps, mean, invstd, var);
  const float* __restrict scale = st.scale.data();
  const float* __restrict shift = st.shift.data();
  auto* __restrict hp = normed.defined() ? ptr<S>(normed) : nullptr;
  auto* __restrict rp = ptr<S>(out);
  at::parallel_for(0, n, kGrain, [=](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t i = r * c;
      if (hp) {
#pragma omp simd
        for (int64_t j = 0; j < c; ++j) {
          const float v = (S::load(xp[i + j]) - shift[j]) * scale[j];
          hp[i + j] = S::store(v);
          rp[i + j] = S::store(relu(v));
        }
      } else {
#pragma omp simd
        for (int64_t j = 0; j < c; ++j) rp[i + j] = S::store(relu((S::load(xp[i + j]) - shift[j]) * scale[j]));
      }
    }
  });
}

// Gradient w.r.t. x of (normed, relu) = (xhat, max(xhat, 0)), xhat = (x - mean) * invstd with the
// batch statistics: g = grad_normed + grad_relu * [xhat > 0], then BatchNorm's backward
// dx = invstd * (g - mean(g) - xhat * mean(g * xhat)). xhat is recomputed from x.
template <typename S, int64_t kC, bool kNormed, bool kInput>
void bn_relu_backward_impl(const at::Tensor& grad_relu, const at::Tensor& grad_normed, const at::Tensor& grad_input,
                           const at::Tensor& x, const at::Tensor& mean, const at::Tensor& invstd, at::Tensor& grad_x) {
  const int64_t c = kC > 0 ? kC : x.size(-1), n = x.numel() / c;
  const auto* __restrict xp = ptr<S>(x);
  const auto* __restrict gr = ptr<S>(grad_relu);
  const auto* __restrict gn = kNormed ? ptr<S>(grad_normed) : nullptr;
  const Stats st = saved_stats(mean, invstd);
  const float* __restrict scale = st.scale.data();
  const float* __restrict shift = st.shift.data();
  auto grad = [=](int64_t i, int64_t j, float& xhat) {
    xhat = (S::load(xp[i]) - shift[j]) * scale[j];
    const float g = xhat > 0.f ? S::load(gr[i]) : 0.f;
    return kNormed ? g + S::load(gn[i]) : g;
  };
  std::vector<double> sum_g, sum_gx;
  channel_sums<kC>(n, c, [=](int64_t r, int64_t j, float& a, float& q) {
    float xhat;
    a = grad(r * c + j, j, xhat);
    q = a * xhat;
  }, sum_g, sum_gx);
  std::vector<float> k0_v(c), k1_v(c);
  for (int64_t j = 0; j < c; ++j) {
    k0_v[j] = float(sum_g[j] / double(n));
    k1_v[j] = float(sum_gx[j] / double(n));
  }
  const float* __restrict k0 = k0_v.data();
  const float* __restrict k1 = k1_v.data();
  auto* __restrict dp = ptr<S>(grad_x);
  const auto* __restrict gi = kInput ? ptr<S>(grad_input) : nullptr;
  at::parallel_for(0, n, kGrain, [=](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
#pragma omp simd
      for (int64_t j = 0; j < c; ++j) {
        float xhat;
        const float g = grad(r * c + j, j, xhat);
        const float d = scale[j] * (g - k0[j] - xhat * k1[j]);
        dp[r * c + j] = S::store(kInput ? d + S::load(gi[r * c + j]) : d);
      }
    }
  });
}

// Returns [normed, relu, mean, invstd, var]; without with_normed the first is the relu map again.
std::vector<at::Tensor> bn_relu_forward(const at::Tensor& x, double eps, bool with_normed) {
  check_rows(x, "bn_relu_forward x");
  const int64_t c = x.size(-1);
  const auto stats = x.options().dtype(at::kFloat);
  at::Tensor normed = with_normed ? at::empty_like(x) : at::Tensor();
  auto out = at::empty_like(x);
  auto mean = at::empty({c}, stats), invstd = at::empty({c}, stats), var = at::empty({c}, stats);
  dispatch(x, c, [&](auto s, auto k) {
    bn_relu_forward_impl<decltype(s), decltype(k)::value>(x, eps, normed, out, mean, invstd, var);
  });
  return {with_normed ? normed : out, out, mean, invstd, var};
}

// grad_input: a gradient w.r.t. x from elsewhere (the raw shortcut's), added in the same pass.
at::Tensor bn_relu_backward(const at::Tensor& grad_relu, const c10::optional<at::Tensor>& grad_normed,
                            const at::Tensor& x, const at::Tensor& mean, const at::Tensor& invstd,
                            const c10::optional<at::Tensor>& grad_input) {
  check_rows(x, "bn_relu_backward x");
  check_like(grad_relu, x, "bn_relu_backward grad_relu");
  const at::Tensor gn = grad_normed.has_value() ? *grad_normed : at::Tensor();
  const at::Tensor gi = grad_input.has_value() ? *grad_input : at::Tensor();
  if (gn.defined()) check_like(gn, x, "bn_relu_backward grad_normed");
  if (gi.defined()) check_like(gi, x, "bn_relu_backward grad_input");
  auto grad_x = at::empty_like(x);
  dispatch(x, x.size(-1), [&](auto s, auto k) {
    using St = decltype(s);
    constexpr int64_t kC = decltype(k)::value;
    if (gn.defined() && gi.defined())
      bn_relu_backward_impl<St, kC, true, true>(grad_relu, gn, gi, x, mean, invstd, grad_x);
    else if (gn.defined())
      bn_relu_backward_impl<St, kC, true, false>(grad_relu, gn, gi, x, mean, invstd, grad_x);
    else if (gi.defined())
      bn_relu_backward_impl<St, kC, false, true>(grad_relu, gn, gi, x, mean, invstd, grad_x);
    else
      bn_relu_backward_impl<St, kC, false, false>(grad_relu, gn, gi, x, mean, invstd, grad_x);
  });
  return grad_x;
}

// ---- The stem: BatchNorm (statistics of the whole map) -> ReLU -> max-pool 3x3, stride 2 -----------
// h: (B, H, W, C) rows. y: (B, PH, PW, C) = relu((max over the window - mean) * invstd), which equals
// maxpool(relu(bn(h))) because both are increasing per channel. `where` holds each maximum's place
// in its window (0..8, row-major; the first maximum, as PyTorch's max-pool, NaN counting as a maximum).

// One place t of a max-pool window: best, arg <- the running maximum per channel and its place (the
// first maximum, NaN counting as one, as PyTorch's max-pool).
template <typename S>
inline void running_max(const typename S::T* __restrict row, int64_t c, int t, float* __restrict best,
                        int32_t* __restrict arg) {
#pragma omp simd
  for (int64_t j = 0; j < c; ++j) {
    const float v = S::load(row[j]);
    const bool take = (v > best[j]) | ((v != v) & (best[j] == best[j]));
    best[j] = take ? v : best[j];
    arg[j] = take ? t : arg[j];
  }
}

template <typename S, int64_t kC>
void stem_forward_impl(const at::Tensor& h, double eps, at::Tensor& y, at::Tensor& where, at::Tensor& mean,
                       at::Tensor& invstd, at::Tensor& var) {
  const int64_t B = h.size(0), H = h.size(1), W = h.size(2), c = kC > 0 ? kC : h.size(3);
  const int64_t PH = y.size(1), PW = y.size(2);
  const auto* __restrict hp = ptr<S>(h);
  const Stats st = batch_stats<S, kC>(hp, B * H * W, c, eps, mean, invstd, var);
  const float* __restrict scale = st.scale.data();
  const float* __restrict shift = st.shift.data();
  auto* __restrict yp = ptr<S>(y);
  auto* __restrict wp = where.data_ptr<uint8_t>();
  at::parallel_for(0, B * PH, 1, [=](int64_t begin, int64_t end) {
    std::vector<float> best_v(c);
    std::vector<int32_t> arg_v(c);
    float* __restrict best = best_v.data();
    int32_t* __restrict arg = arg_v.data();
    for (int64_t bp = begin; bp < end; ++bp) {
      const int64_t b = bp / PH, ph = bp % PH;
      for (int64_t pw = 0; pw < PW; ++pw) {
        const auto* __restrict first = hp + ((b * H + 2 * ph) * W + 2 * pw) * c;
#pragma omp simd
        for (int64_t j = 0; j < c; ++j) {
          best[j] = S::load(first[j]);
          arg[j] = 0;
        }
        for (int k = 1; k < 9; ++k) running_max<S>(first + ((k / 3) * W + k % 3) * c, c, k, best, arg);
        const int64_t o = (bp * PW + pw) * c;
#pragma omp simd
        for (int64_t j = 0; j < c; ++j) {
          yp[o + j] = S::store(relu((best[j] - shift[j]) * scale[j]));
          wp[o + j] = uint8_t(arg[j]);
        }
      }
    }
  });
}

// The statistics' part of the stem's gradient w.r.t. h (of n positions), a + b * (h - mean) per channel,
// from the sums of grad_z = grad_y * [y > 0] and grad_z * y over the pooled map:
// a = grad_mean / n, b = 2 grad_var / n with grad_mean = -invstd sum(grad_z), grad_var = -invstd^2 sum(grad_z y) / 2.
template <typename S, int64_t kC>
void stem_grad_terms(const at::Tensor& grad_y, const at::Tensor& y, const at::Tensor& invstd, int64_t n, float* a,
                     float* b) {
  const int64_t c = kC > 0 ? kC : y.size(3);
  const auto* __restrict gy = ptr<S>(grad_y);
  const auto* __restrict yp = ptr<S>(y);
  std::vector<double> sum_g, sum_gy;
  channel_sums<kC>(y.numel() / c, c, [=](int64_t r, int64_t j, float& g, float& q) {
    const float yv = S::load(yp[r * c + j]);
    g = yv > 0.f ? S::load(gy[r * c + j]) : 0.f;
    q = g * yv;
  }, sum_g, sum_gy);
  const float* is = invstd.data_ptr<float>();
  for (int64_t j = 0; j < c; ++j) {
    const double s = is[j];
    a[j] = float(-s * sum_g[j] / double(n));
    b[j] = float(-s * s * sum_gy[j] / double(n));
  }
}

// Gradient of the stem w.r.t. h: the statistics' part a + b * h everywhere, plus the pooled gradient
// (through the ReLU, times invstd) at each window's maximum. Per sample through a float32 plane (in
// cache), with nine masked vector additions per window instead of scattered stores, so bfloat16
// output is rounded once.
template <typename S, int64_t kC>
void stem_backward_impl(const at::Tensor& grad_y, const at::Tensor& h, const at::Tensor& where, const at::Tensor& y,
                        const at::Tensor& mean, const at::Tensor& invstd, at::Tensor& grad_h) {
  const int64_t B = h.size(0), H = h.size(1), W = h.size(2), c = kC > 0 ? kC : h.size(3);
  const int64_t PH = y.size(1), PW = y.size(2), n = B * H * W;
  const auto* __restrict gy = ptr<S>(grad_y);
  const auto* __restrict yp = ptr<S>(y);
  const auto* __restrict wp = where.data_ptr<uint8_t>();
  const float* __restrict m = mean.data_ptr<float>();
  const float* __restrict is = invstd.data_ptr<float>();
  std::vector<float> a_v(c), b_v(c);  // the gradient is a + b * (h - mean) plus the pooled part
  stem_grad_terms<S, kC>(grad_y, y, invstd, n, a_v.data(), b_v.data());
  const float* __restrict ca = a_v.data();
  const float* __restrict cb = b_v.data();
  const auto* __restrict hp = ptr<S>(h);
  auto* __restrict dp = ptr<S>(grad_h);
  at::parallel_for(0, B, 1, [=](int64_t begin, int64_t end) {
    std::vector<float> plane_v(size_t(H) * W * c), grad_v(c);
    float* __restrict plane = plane_v.data();
    float* __restrict g = grad_v.data();
    for (int64_t b = begin; b < end; ++b) {
      const int64_t in = b * H * W * c;
      for (int64_t r = 0; r < H * W; ++r) {
#pragma omp simd
        for (int64_t j = 0; j < c; ++j) plane[r * c + j] = ca[j] + cb[j] * (S::load(hp[in + r * c + j]) - m[j]);
      }
      for (int64_t ph = 0; ph < PH; ++ph)
        for (int64_t pw = 0; pw < PW; ++pw) {
          const int64_t o = ((b * PH + ph) * PW + pw) * c;
          float* __restrict window = plane + (2 * ph * W + 2 * pw) * c;
#pragma omp simd
          for (int64_t j = 0; j < c; ++j) g[j] = S::load(yp[o + j]) > 0.f ? S::load(gy[o + j]) * is[j] : 0.f;
          for (int k = 0; k < 9; ++k) {
            float* __restrict place = window + ((k / 3) * W + k % 3) * c;
#pragma omp simd
            for (int64_t j = 0; j < c; ++j) place[j] += wp[o + j] == k ? g[j] : 0.f;
          }
        }
#pragma omp simd
      for (int64_t i = 0; i < H * W * c; ++i) dp[in + i] = S::store(plane[i]);
    }
  });
}

// Returns [y, where, mean, invstd, var].
std::vector<at::Tensor> stem_forward(const at::Tensor& h, double eps) {
  check_rows(h, "stem_forward h", 4);
  TORCH_CHECK(h.size(1) >= 3 && h.size(2) >= 3, "stem_forward: h is (B, H, W, C) with H, W >= 3");
  const int64_t B = h.size(0), H = h.size(1), W = h.size(2), c = h.size(3);
  const auto stats = h.options().dtype(at::kFloat);
  auto y = at::empty({B, (H - 3) / 2 + 1, (W - 3) / 2 + 1, c}, h.options());
  auto where = at::empty(y.sizes(), h.options().dtype(at::kByte));
  auto mean = at::empty({c}, stats), invstd = at::empty({c}, stats), var = at::empty({c}, stats);
  dispatch(h, c, [&](auto s, auto k) {
    stem_forward_impl<decltype(s), decltype(k)::value>(h, eps, y, where, mean, invstd, var);
  });
  return {y, where, mean, invstd, var};
}

at::Tensor stem_backward(const at::Tensor& grad_y, const at::Tensor& h, const at::Tensor& where, const at::Tensor& y,
                         const at::Tensor& mean, const at::Tensor& invstd) {
  check_rows(h, "stem_backward h", 4);
  check_like(grad_y, y, "stem_backward grad_y");
  TORCH_CHECK(where.sizes() == y.sizes() && where.scalar_type() == at::kByte, "stem_backward: where from stem_forward");
  auto grad_h = at::empty_like(h);
  dispatch(h, h.size(3), [&](auto s, auto k) {
    stem_backward_impl<decltype(s), decltype(k)::value>(grad_y, h, where, y, mean, invstd, grad_h);
  });
  return grad_h;
}

// ---- Max-pool 3x3, stride 2, padding 1 (the downsampling shortcut) ------------------------------------
// x: (B, H, W, C) rows -> y: (B, (H - 1) / 2 + 1, (W - 1) / 2 + 1, C); `where` as in the stem (the
// window's place 0..8, places outside the map never chosen). The backward adds each window's gradient
// at its maximum through a float32 plane per sample (in cache), then writes it once.

template <typename S, int64_t kC>
void pool_forward_impl(const at::Tensor& x, at::Tensor& y, at::Tensor& where) {
  const int64_t B = x.size(0), H = x.size(1), W = x.size(2), c = kC > 0 ? kC : x.size(3);
  const int64_t PH = y.size(1), PW = y.size(2);
  const auto* __restrict xp = ptr<S>(x);
  auto* __restrict yp = ptr<S>(y);
  auto* __restrict wp = where.data_ptr<uint8_t>();
  std::vector<float> best_v(c);
  std::vector<int32_t> arg_v(c);
  float* __restrict best = best_v.data();
  int32_t* __restrict arg = arg_v.data();
  for (int64_t bp = 0; bp < B * PH; ++bp) {
    const int64_t b = bp / PH, ph = bp % PH;
    for (int64_t pw = 0; pw < PW; ++pw) {
      bool first = true;
      for (int t = 0; t < 9; ++t) {
        const int64_t h = 2 * ph - 1 + t / 3, w = 2 * pw - 1 + t % 3;
        if (h < 0 || h >= H || w < 0 || w >= W) continue;
        const auto* __restrict row = xp + ((b * H + h) * W + w) * c;
        if (first) {
#pragma omp simd
          for (int64_t j = 0; j < c; ++j) {
            best[j] = S::load(row[j]);
            arg[j] = t;
          }
          first = false;
          continue;
        }
        running_max<S>(row, c, t, best, arg);
      }
      const int64_t o = (bp * PW + pw) * c;
#pragma omp simd
      for (int64_t j = 0; j < c; ++j) {
        yp[o + j] = S::store(best[j]);
        wp[o + j] = uint8_t(arg[j]);
      }
    }
  }
}

template <typename S, int64_t kC>
void pool_backward_impl(const at::Tensor& grad_y, const at::Tensor& where, at::Tensor& grad_x) {
  const int64_t B = grad_x.size(0), H = grad_x.size(1), W = grad_x.size(2), c = kC > 0 ? kC : grad_x.size(3);
  const int64_t PH = grad_y.size(1), PW = grad_y.size(2);
  const auto* __restrict gy = ptr<S>(grad_y);
  const auto* __restrict wp = where.data_ptr<uint8_t>();
  auto* __restrict dp = ptr<S>(grad_x);
  std::vector<float> plane_v(size_t(H) * W * c);
  float* __restrict plane = plane_v.data();
  for (int64_t b = 0; b < B; ++b) {
    std::fill(plane_v.begin(), plane_v.end(), 0.f);
    for (int64_t ph = 0; ph < PH; ++ph)
      for (int64_t pw = 0; pw < PW; ++pw) {
        const int64_t o = ((b * PH + ph) * PW + pw) * c;
        for (int t = 0; t < 9; ++t) {
          const int64_t h = 2 * ph - 1 + t / 3, w = 2 * pw - 1 + t % 3;
          if (h < 0 || h >= H || w < 0 || w >= W) continue;
          float* __restrict place = plane + (h * W + w) * c;
#pragma omp simd
          for (int64_t j = 0; j < c; ++j) place[j] += wp[o + j] == t ? S::load(gy[o + j]) : 0.f;
        }
      }
    auto* __restrict out = dp + b * H * W * c;
#pragma omp simd
    for (int64_t i = 0; i < H * W * c; ++i) out[i] = S::store(plane[i]);
  }
}

std::vector<at::Tensor> pool_forward(const at::Tensor& x) {
  check_rows(x, "pool_forward x", 4);
  const int64_t B = x.size(0), H = x.size(1), W = x.size(2), c = x.size(3);
  auto y = at::empty({B, (H - 1) / 2 + 1, (W - 1) / 2 + 1, c}, x.options());
  auto where = at::empty(y.sizes(), x.options().dtype(at::kByte));
  dispatch(x, c, [&](auto s, auto k) { pool_forward_impl<decltype(s), decltype(k)::value>(x, y, where); });
  return {y, where};
}

at::Tensor pool_backward(const at::Tensor& grad_y, const at::Tensor& where, int64_t H, int64_t W) {
  check_rows(grad_y, "pool_backward grad_y", 4);
  TORCH_CHECK(where.sizes() == grad_y.sizes() && where.scalar_type() == at::kByte && grad_y.size(1) == (H - 1) / 2 + 1
                  && grad_y.size(2) == (W - 1) / 2 + 1, "pool_backward: where from pool_forward of an H x W map");
  auto grad_x = at::empty({grad_y.size(0), H, W, grad_y.size(3)}, grad_y.options());
  dispatch(grad_y, grad_y.size(3), [&](auto s, auto k) {
    pool_backward_impl<decltype(s), decltype(k)::value>(grad_y, where, grad_x);
  });
  return grad_x;
}

// ---- The stem with its convolution: conv 7x7/2 (one input channel, 16 out, no bias) -> the stem above ----
// x: (B, H, W) float32 (the normalised spectrum), w: (49, 16) float32 (w[kh * 7 + kw][channel]). The
// conv output h (B, OH, OW, 16) is never stored: each sample's h is computed into a float32 plane in
// cache, its statistics summed and its windows max-pooled (max-pool commutes with the increasing
// normalisation and ReLU), and only the pooled map is kept. The backward recomputes h per sample,
// forms the gradient w.r.t. h in the plane as stem_backward does and sums it against the input's
// patches into the weight's gradient; the spectrum needs no gradient. 16 channels = one vector of
// GCC's vector extension (one AVX-512 register where the CPU has them).

typedef float v16 __attribute__((vector_size(64)));
constexpr int kStemC = 16, kTap = 7, kTile = 8;

inline v16 vload(const float* p) {
  v16 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void vstore(float* p, v16 v) { std::memcpy(p, &v, sizeof(v)); }
typedef uint32_t v16u __attribute__((vector_size(64)));
typedef uint16_t v16h __attribute__((vector_size(32)));
typedef int32_t v16i __attribute__((vector_size(64)));
typedef uint8_t v16b __attribute__((vector_size(16)));
inline void vstore(float* p, v16 v, F32) { vstore(p, v); }
inline void vstore(uint16_t* p, v16 v, BF16) {  // BF16::store of 16 lanes
  v16u u;
  std::memcpy(&u, &v, sizeof(u));
  const v16u rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const v16u nan = v16u(v != v);
  const v16h h = __builtin_convertvector((rounded & ~nan) | (0x7FC0u & nan), v16h);
  std::memcpy(p, &h, sizeof(h));
}
inline v16 vload(const float* p, F32) { return vload(p); }
inline v16 vload(const uint16_t* p, BF16) {
  v16h h;
  std::memcpy(&h, p, sizeof(h));
  const v16u u = __builtin_convertvector(h, v16u) << 16;
  v16 v;
  std::memcpy(&v, &u, sizeof(v));
  return v;
}
inline v16 vrelu(v16 v) { return v < 0.f ? v16{} : v; }  // NaN stays NaN

// The FMAs below read x by broadcast loads; GCC's predictive commoning would instead keep the shared
// inputs of neighbouring positions in registers and broadcast them with shuffles, on the port the
// FMAs need (measured: the backward 37 -> 35 ms on a 64 x 500 x 141 batch).
#if defined(__GNUC__) && !defined(__clang__)
#define kBroadcastLoads __attribute__((optimize("no-predictive-commoning")))
#else
#define kBroadcastLoads
#endif

// Row oh of h for one sample: out[ow * 16 + j] = sum over kh, kw of x[2 oh + kh][2 ow + kw] * w[kh * 7 + kw][j].
inline void stem_conv_row(const float* __restrict xs, int64_t W, int64_t oh, int64_t OW, const v16* __restrict wk,
                          float* __restrict out) {
  int64_t ow0 = 0;
  for (; ow0 + kTile <= OW; ow0 += kTile) {
    v16 acc[kTile] = {};
    for (int kh = 0; kh < kTap; ++kh) {
      const float* __restrict xr = xs + (2 * oh + kh) * W + 2 * ow0;
      for (int kw = 0; kw < kTap; ++kw) {
        const v16 wv = wk[kh * kTap + kw];
        for (int t = 0; t < kTile; ++t) acc[t] += xr[2 * t + kw] * wv;
      }
    }
    for (int t = 0; t < kTile; ++t) vstore(out + (ow0 + t) * kStemC, acc[t]);
  }
  for (; ow0 < OW; ++ow0) {
    v16 acc = {};
    for (int kh = 0; kh < kTap; ++kh) {
      const float* __restrict xr = xs + (2 * oh + kh) * W + 2 * ow0;
      for (int kw = 0; kw < kTap; ++kw) acc += xr[kw] * wk[kh * kTap + kw];
    }
    vstore(out + ow0 * kStemC, acc);
  }
}

void check_stem_conv(const at::Tensor& x, const at::Tensor& w) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.is_contiguous() && x.dim() == 3
                  && x.size(1) >= 11 && x.size(2) >= 11, "stem_conv: x is a contiguous float32 (B, H, W), H, W >= 11");
  TORCH_CHECK(w.scalar_type() == at::kFloat && w.is_contiguous() && w.dim() == 2 && w.size(0) == kTap * kTap
                  && w.size(1) == kStemC, "stem_conv: w is a contiguous float32 (49, 16)");
}

std::vector<v16> stem_taps(const at::Tensor& w) {
  std::vector<v16> taps(kTap * kTap);
  for (int k = 0; k < kTap * kTap; ++k) taps[k] = vload(w.data_ptr<float>() + k * kStemC);
  return taps;
}

template <typename S>
void stem_conv_forward_impl(const at::Tensor& x, const at::Tensor& w, double eps, at::Tensor& y, at::Tensor& where,
                            at::Tensor& mean, at::Tensor& invstd, at::Tensor& var) {
  const int64_t B = x.size(0), H = x.size(1), W = x.size(2), OH = (H - kTap) / 2 + 1, OW = (W - kTap) / 2 + 1;
  const int64_t PH = y.size(1), PW = y.size(2);
  const std::vector<v16> taps = stem_taps(w);
  std::vector<float> plane_v(size_t(OH) * OW * kStemC), pooled_v(size_t(B) * PH * PW * kStemC);
  float* __restrict plane = plane_v.data();
  float* __restrict pooled = pooled_v.data();
  auto* __restrict wp = where.data_ptr<uint8_t>();
  const float* __restrict xp = x.data_ptr<float>();
  Moments moments(kStemC);  // merged sample by sample
  for (int64_t b = 0; b < B; ++b) {
    double sum[kStemC] = {}, m2[kStemC] = {};
    for (int64_t oh = 0; oh < OH; ++oh) {
      float* __restrict row = plane + oh * OW * kStemC;
      stem_conv_row(xp + b * H * W, W, oh, OW, taps.data(), row);
      v16 s = {};
      for (int64_t ow = 0; ow < OW; ++ow) s += vload(row + ow * kStemC);
      for (int j = 0; j < kStemC; ++j) sum[j] += s[j];
    }
    v16 mean_b;
    for (int j = 0; j < kStemC; ++j) {
      sum[j] /= double(OH * OW);
      mean_b[j] = float(sum[j]);
    }
    for (int64_t r = 0; r < OH; ++r) {  // the plane is in cache: deviations from the sample's mean
      v16 q = {};
      for (int64_t ow = 0; ow < OW; ++ow) {
        const v16 d = vload(plane + (r * OW + ow) * kStemC) - mean_b;
        q += d * d;
      }
      for (int j = 0; j < kStemC; ++j) m2[j] += q[j];
    }
    moments.merge(double(OH * OW), sum, m2);
    for (int64_t ph = 0; ph < PH; ++ph)
      for (int64_t pw = 0; pw < PW; ++pw) {
        const float* __restrict first = plane + (2 * ph * OW + 2 * pw) * kStemC;
        v16 best = vload(first);
        v16i arg = {};
        for (int t = 1; t < 9; ++t) {
          const v16 v = vload(first + ((t / 3) * OW + t % 3) * kStemC);
          const v16i take = (v > best) | ((v != v) & (best == best));  // the first maximum; NaN counts as one
          best = take ? v : best;
          arg = take ? v16i{} + t : arg;
        }
        const int64_t o = ((b * PH + ph) * PW + pw) * kStemC;
        vstore(pooled + o, best);
        const v16b places = __builtin_convertvector(arg, v16b);
        std::memcpy(wp + o, &places, sizeof(places));
      }
  }
  float* m = mean.data_ptr<float>();
  float* is = invstd.data_ptr<float>();
  moments.write(eps, m, var.data_ptr<float>(), is);
  const v16 mv = vload(m), sv = vload(is);
  auto* __restrict yp = ptr<S>(y);
  for (int64_t r = 0; r < B * PH * PW; ++r) vstore(yp + r * kStemC, vrelu((vload(pooled + r * kStemC) - mv) * sv), S{});
}

template <typename S>
kBroadcastLoads void stem_conv_backward_impl(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& w,
                             const at::Tensor& where, const at::Tensor& y, const at::Tensor& mean,
                             const at::Tensor& invstd, at::Tensor& grad_w) {
  const int64_t B = x.size(0), H = x.size(1), W = x.size(2), OH = (H - kTap) / 2 + 1, OW = (W - kTap) / 2 + 1;
  const int64_t PH = y.size(1), PW = y.size(2), n = B * OH * OW;
  const auto* __restrict gy = ptr<S>(grad_y);
  const auto* __restrict yp = ptr<S>(y);
  const auto* __restrict wp = where.data_ptr<uint8_t>();
  const float* __restrict is = invstd.data_ptr<float>();
  float a[kStemC], b[kStemC];  // the statistics' part of the gradient w.r.t. h: ca + cb * (h - mean)
  stem_grad_terms<S, kStemC>(grad_y, y, invstd, n, a, b);
  const v16 ca = vload(a), cb = vload(b);
  const v16 mv = vload(mean.data_ptr<float>()), sv = vload(is);
  const std::vector<v16> taps = stem_taps(w);
  std::vector<float> plane_v(size_t(OH) * OW * kStemC);
  float* __restrict plane = plane_v.data();
  const float* __restrict xp = x.data_ptr<float>();
  std::vector<double> total(kTap * kTap * kStemC, 0.0);
  for (int64_t b = 0; b < B; ++b) {
    const float* __restrict xs = xp + b * H * W;
    for (int64_t oh = 0; oh < OH; ++oh) {
      float* __restrict row = plane + oh * OW * kStemC;
      stem_conv_row(xs, W, oh, OW, taps.data(), row);
      for (int64_t ow = 0; ow < OW; ++ow) vstore(row + ow * kStemC, ca + cb * (vload(row + ow * kStemC) - mv));
    }
    for (int64_t ph = 0; ph < PH; ++ph)
      for (int64_t pw = 0; pw < PW; ++pw) {
        const int64_t o = ((b * PH + ph) * PW + pw) * kStemC;
        v16b places;
        std::memcpy(&places, wp + o, sizeof(places));
        const v16i arg = __builtin_convertvector(places, v16i);
        const v16 g = vload(yp + o, S{}) > 0.f ? vload(gy + o, S{}) * sv : v16{};
        float* __restrict window = plane + (2 * ph * OW + 2 * pw) * kStemC;
        for (int t = 0; t < 9; ++t) {
          float* __restrict place = window + ((t / 3) * OW + t % 3) * kStemC;
          vstore(place, vload(place) + (arg == t ? g : v16{}));
        }
      }
    v16 acc[kTap * kTap] = {};  // this sample's sums; double across samples
    for (int64_t oh = 0; oh < OH; ++oh) {
      const float* __restrict row = plane + oh * OW * kStemC;
      for (int kh = 0; kh < kTap; ++kh) {
        const float* __restrict xr = xs + (2 * oh + kh) * W;
        v16 a[kTap], e[kTap] = {};  // two sets (even and odd positions): 14 independent chains of FMAs
        for (int kw = 0; kw < kTap; ++kw) a[kw] = acc[kh * kTap + kw];
        int64_t ow = 0;
        for (; ow + 1 < OW; ow += 2) {
          const v16 g0 = vload(row + ow * kStemC), g1 = vload(row + (ow + 1) * kStemC);
          for (int kw = 0; kw < kTap; ++kw) {
            a[kw] += xr[2 * ow + kw] * g0;
            e[kw] += xr[2 * ow + 2 + kw] * g1;
          }
        }
        for (; ow < OW; ++ow) {
          const v16 gv = vload(row + ow * kStemC);
          for (int kw = 0; kw < kTap; ++kw) a[kw] += xr[2 * ow + kw] * gv;
        }
        for (int kw = 0; kw < kTap; ++kw) acc[kh * kTap + kw] = a[kw] + e[kw];
      }
    }
    for (int t = 0; t < kTap * kTap; ++t)
      for (int j = 0; j < kStemC; ++j) total[t * kStemC + j] += acc[t][j];
  }
  float* gw = grad_w.data_ptr<float>();
  for (int64_t i = 0; i < kTap * kTap * kStemC; ++i) gw[i] = float(total[i]);
}

// Returns [y, where, mean, invstd, var]; y is bfloat16 with out_bf16, else float32.
std::vector<at::Tensor> stem_conv_forward(const at::Tensor& x, const at::Tensor& w, double eps, bool out_bf16) {
  check_stem_conv(x, w);
  const int64_t B = x.size(0), OH = (x.size(1) - kTap) / 2 + 1, OW = (x.size(2) - kTap) / 2 + 1;
  const auto stats = x.options();
  auto y = at::empty({B, (OH - 3) / 2 + 1, (OW - 3) / 2 + 1, kStemC}, x.options().dtype(out_bf16 ? at::kBFloat16 : at::kFloat));
  auto where = at::empty(y.sizes(), x.options().dtype(at::kByte));
  auto mean = at::empty({kStemC}, stats), invstd = at::empty({kStemC}, stats), var = at::empty({kStemC}, stats);
  if (out_bf16)
    stem_conv_forward_impl<BF16>(x, w, eps, y, where, mean, invstd, var);
  else
    stem_conv_forward_impl<F32>(x, w, eps, y, where, mean, invstd, var);
  return {y, where, mean, invstd, var};
}

at::Tensor stem_conv_backward(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& w,
                              const at::Tensor& where, const at::Tensor& y, const at::Tensor& mean,
                              const at::Tensor& invstd) {
  check_stem_conv(x, w);
  check_like(grad_y, y, "stem_conv_backward grad_y");
  TORCH_CHECK(y.dim() == 4 && y.size(0) == x.size(0) && y.size(3) == kStemC && where.sizes() == y.sizes()
                  && where.scalar_type() == at::kByte, "stem_conv_backward: y and where from stem_conv_forward");
  auto grad_w = at::empty_like(w);
  if (y.scalar_type() == at::kBFloat16)
    stem_conv_backward_impl<BF16>(grad_y, x, w, where, y, mean, invstd, grad_w);
  else
    stem_conv_backward_impl<F32>(grad_y, x, w, where, y, mean, invstd, grad_w);
  return grad_w;
}

// ---- Spectra: |rFFT| and the per-bin BatchNorm of the STFT branch, written bins-major ------------------
// spec: (R, NB, 2) float32, the view_as_real of an rFFT (R = batch x frames rows). magnitude: |spec| of
// bins [first, NB). spectrum_norm: (B, F, NB, 2) -> x (B, NB - first, F) = (|spec| - mean) * invstd per
// bin, with the batch's statistics (training) or the given ones; the magnitude goes through one
// float32 map (B, F, bins) in the rows' layout, then is normalised and transposed in blocks of 16
// frames that stay in cache.

// frames: (B, L) clips -> (B, F, n_fft) windowed frames of the centred STFT (the clip padded by n_fft / 2
// on both sides, with zeros or by reflection as torch.nn.functional.pad), F = (L + 2 (n_fft / 2) - n_fft) / hop + 1.
at::Tensor frames(const at::Tensor& wave, int64_t n_fft, int64_t hop, const at::Tensor& window, bool reflect) {
  TORCH_CHECK(wave.device().is_cpu() && wave.scalar_type() == at::kFloat && wave.is_contiguous() && wave.dim() == 2,
              "frames: a contiguous float32 (B, L) batch of clips");
  TORCH_CHECK(window.scalar_type() == at::kFloat && window.is_contiguous() && window.numel() == n_fft && hop > 0,
              "frames: a float32 window of n_fft samples and hop > 0");
  const int64_t B = wave.size(0), L = wave.size(1), half = n_fft / 2;
  TORCH_CHECK(L + 2 * half >= n_fft && (!reflect || half < L), "frames: clips too short for the padding");
  const int64_t F = (L + 2 * half - n_fft) / hop + 1;
  auto out = at::empty({B, F, n_fft}, wave.options());
  const float* __restrict xp = wave.data_ptr<float>();
  const float* __restrict w = window.data_ptr<float>();
  float* __restrict op = out.data_ptr<float>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t f = 0; f < F; ++f) {
      const float* __restrict x = xp + b * L;
      float* __restrict o = op + (b * F + f) * n_fft;
      const int64_t start = f * hop - half;
      if (start >= 0 && start + n_fft <= L) {
#pragma omp simd
        for (int64_t n = 0; n < n_fft; ++n) o[n] = x[start + n] * w[n];
        continue;
      }
      for (int64_t n = 0; n < n_fft; ++n) {
        int64_t i = start + n;
        if (reflect) {
          i = i < 0 ? -i : i;
          i = i >= L ? 2 * (L - 1) - i : i;
        }
        o[n] = (i >= 0 && i < L) ? x[i] * w[n] : 0.f;
      }
    }
  return out;
}

// unfold_rows: (B, L) -> (B, n, k) overlapping frames x[b, p * stride + i], n = (L - k) / stride + 1, as
// float32 or rounded to bfloat16 (what autocast's cast of the copied frames gives).
template <typename S>
void unfold_rows_impl(const float* __restrict xp, int64_t B, int64_t L, int64_t k, int64_t stride, int64_t n,
                      typename S::T* __restrict op) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t p = 0; p < n; ++p) {
      const float* __restrict x = xp + b * L + p * stride;
      auto* __restrict o = op + (b * n + p) * k;
#pragma omp simd
      for (int64_t i = 0; i < k; ++i) o[i] = S::store(x[i]);
    }
}

at::Tensor unfold_rows(const at::Tensor& x, int64_t k, int64_t stride, bool out_bf16) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.is_contiguous() && x.dim() == 2 && k > 0
                  && stride > 0 && x.size(1) >= k, "unfold_rows: a contiguous float32 (B, L) with L >= k");
  const int64_t B = x.size(0), L = x.size(1), n = (L - k) / stride + 1;
  auto out = at::empty({B, n, k}, x.options().dtype(out_bf16 ? at::kBFloat16 : at::kFloat));
  if (out_bf16)
    unfold_rows_impl<BF16>(x.data_ptr<float>(), B, L, k, stride, n, ptr<BF16>(out));
  else
    unfold_rows_impl<F32>(x.data_ptr<float>(), B, L, k, stride, n, ptr<F32>(out));
  return out;
}

// mixup: out[i] = lam[i] * x[i] + (1 - lam[i]) * x[perm[i]] per row of a (B, L) batch, in one pass; the
// products are rounded before the sum (no fused multiply-add), so the numbers are PyTorch's.
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("fp-contract=off")))
#endif
void mixup_impl(const float* __restrict xp, const int64_t* __restrict perm, const float* __restrict lam, int64_t B,
                int64_t L, float* __restrict op) {
  for (int64_t i = 0; i < B; ++i) {
    const float a = lam[i], b = 1.f - lam[i];
    const float* __restrict x = xp + i * L;
    const float* __restrict y = xp + perm[i] * L;
    float* __restrict o = op + i * L;
#pragma omp simd
    for (int64_t n = 0; n < L; ++n) {
      const float p = a * x[n], q = b * y[n];
      o[n] = p + q;
    }
  }
}

at::Tensor mixup(const at::Tensor& x, const at::Tensor& perm, const at::Tensor& lam) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.is_contiguous() && x.dim() == 2,
              "mixup: a contiguous float32 (B, L) batch");
  const int64_t B = x.size(0);
  TORCH_CHECK(perm.scalar_type() == at::kLong && perm.is_contiguous() && perm.numel() == B && lam.scalar_type() == at::kFloat
                  && lam.is_contiguous() && lam.numel() == B, "mixup: int64 perm and float32 lam, one per row");
  const int64_t* pp = perm.data_ptr<int64_t>();
  for (int64_t i = 0; i < B; ++i) TORCH_CHECK(pp[i] >= 0 && pp[i] < B, "mixup: perm out of range");
  auto out = at::empty_like(x);
  mixup_impl(x.data_ptr<float>(), pp, lam.data_ptr<float>(), B, x.size(1), out.data_ptr<float>());
  return out;
}

void check_spectrum(const at::Tensor& spec, int64_t first, int64_t dims) {
  TORCH_CHECK(spec.device().is_cpu() && spec.scalar_type() == at::kFloat && spec.is_contiguous()
                  && spec.dim() == dims && spec.size(-1) == 2, "spectrum: a contiguous float32 view_as_real of an rFFT");
  TORCH_CHECK(first >= 0 && first < spec.size(-2), "spectrum: first bin out of range");
}

// |spec| of bins [first, NB) for rows [0, R) into out (R x (NB - first)); with moments, each bin's
// statistics, merged over blocks of kBlock rows.
void magnitude_rows(const float* __restrict sp, int64_t R, int64_t NB, int64_t first, float* __restrict out,
                    Moments* moments) {
  const int64_t nb = NB - first;
  std::vector<double> mean_v(nb), m2_v(nb);
  std::vector<float> s_v(nb), mf_v(nb);
  float* __restrict s1 = s_v.data();
  float* __restrict mf = mf_v.data();
  for (int64_t r0 = 0; r0 < R; r0 += kBlock) {
    const int64_t stop = std::min(R, r0 + kBlock);
    for (int64_t r = r0; r < stop; ++r) {
      const float* __restrict in = sp + (r * NB + first) * 2;
      float* __restrict o = out + r * nb;
#pragma omp simd
      for (int64_t j = 0; j < nb; ++j) o[j] = std::sqrt(in[2 * j] * in[2 * j] + in[2 * j + 1] * in[2 * j + 1]);
    }
    if (!moments) continue;
    std::fill(s1, s1 + nb, 0.f);  // the block is in cache: its mean, then the deviations from it
    for (int64_t r = r0; r < stop; ++r) {
#pragma omp simd
      for (int64_t j = 0; j < nb; ++j) s1[j] += out[r * nb + j];
    }
    for (int64_t j = 0; j < nb; ++j) {
      mean_v[j] = double(s1[j]) / double(stop - r0);
      mf[j] = float(mean_v[j]);
    }
    std::fill(s1, s1 + nb, 0.f);
    for (int64_t r = r0; r < stop; ++r) {
#pragma omp simd
      for (int64_t j = 0; j < nb; ++j) {
        const float d = out[r * nb + j] - mf[j];
        s1[j] += d * d;
      }
    }
    for (int64_t j = 0; j < nb; ++j) m2_v[j] = s1[j];
    moments->merge(double(stop - r0), mean_v.data(), m2_v.data());
  }
}

at::Tensor magnitude(const at::Tensor& spec, int64_t first) {
  check_spectrum(spec, first, spec.dim());
  TORCH_CHECK(spec.dim() >= 2, "magnitude: (..., bins, 2)");
  std::vector<int64_t> shape(spec.sizes().begin(), spec.sizes().end() - 1);
  const int64_t NB = shape.back();
  shape.back() = NB - first;
  auto out = at::empty(shape, spec.options());
  magnitude_rows(spec.data_ptr<float>(), spec.numel() / (2 * NB), NB, first, out.data_ptr<float>(), nullptr);
  return out;
}

// Returns [x, mean, var]: with training the batch's mean and biased variance, else mean and var as given.
std::vector<at::Tensor> spectrum_norm(const at::Tensor& spec, int64_t first, double eps, bool training,
                                      const at::Tensor& mean_in, const at::Tensor& var_in) {
  check_spectrum(spec, first, 4);
  const int64_t B = spec.size(0), F = spec.size(1), NB = spec.size(2), nb = NB - first, R = B * F;
  TORCH_CHECK(training || (mean_in.scalar_type() == at::kFloat && var_in.scalar_type() == at::kFloat
                           && mean_in.is_contiguous() && var_in.is_contiguous() && mean_in.numel() == nb
                           && var_in.numel() == nb), "spectrum_norm: float32 mean and var, one per bin");
  auto mag = at::empty({R, nb}, spec.options());
  Moments moments(nb);
  magnitude_rows(spec.data_ptr<float>(), R, NB, first, mag.data_ptr<float>(), training ? &moments : nullptr);
  at::Tensor mean = training ? at::empty({nb}, spec.options()) : mean_in.clone();
  at::Tensor var = training ? at::empty({nb}, spec.options()) : var_in.clone();
  if (training) moments.write(eps, mean.data_ptr<float>(), var.data_ptr<float>(), nullptr);
  std::vector<float> shift(mean.data_ptr<float>(), mean.data_ptr<float>() + nb), scale(nb);
  for (int64_t j = 0; j < nb; ++j) scale[j] = float(1.0 / std::sqrt(double(var.data_ptr<float>()[j]) + eps));
  auto x = at::empty({B, nb, F}, spec.options());
  const float* __restrict mp = mag.data_ptr<float>();
  float* __restrict xp = x.data_ptr<float>();
  constexpr int64_t kFrames = 16;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t f0 = 0; f0 < F; f0 += kFrames) {
      const int64_t nf = std::min(kFrames, F - f0);
      const float* __restrict in = mp + (b * F + f0) * nb;
      for (int64_t j = 0; j < nb; ++j) {
        float* __restrict o = xp + (b * nb + j) * F + f0;
        const float sh = shift[j], sc = scale[j];
        for (int64_t f = 0; f < nf; ++f) o[f] = (in[f * nb + j] - sh) * sc;
      }
    }
  return {x, mean, var};
}

// ---- Squeeze-excitation: out = r * w[sample, channel] (+ s), r = x or relu(x), w = gate(mean of r) -------
// x: (B, P, C) rows (a channels-last map or a length-major sequence), w: (B, C) float32. The gate's
// small MLP runs in PyTorch (asd/models/cpu_kernels.py); these are the passes over the map. The
// backward is two passes instead of PyTorch's four (the gating's two gradients, the mean's broadcast
// gradient, their sum, the ReLU's mask): grad_w = sum over positions of g * r, then, once the MLP's
// backward gave the mean's gradient gm, grad_x = [x > 0 with the ReLU] * (g * w + gm / P).

template <typename S, bool kRelu>
inline float excited(const typename S::T v) {
  return kRelu ? relu(S::load(v)) : S::load(v);
}

// out[b * c + j] = scale * (sum over positions p of term((b * P + p) * c + j)): float32 within blocks of
// kBlock positions, double across them.
template <int64_t kC, typename Term>
void sample_sums(int64_t B, int64_t P, int64_t c_run, double scale, Term term, float* __restrict out) {
  const int64_t c = kC > 0 ? kC : c_run;
  std::vector<float> block_v(c);
  std::vector<double> total_v(c);
  float* __restrict block = block_v.data();
  for (int64_t b = 0; b < B; ++b) {
    std::fill(total_v.begin(), total_v.end(), 0.0);
    for (int64_t p0 = 0; p0 < P; p0 += kBlock) {
      std::fill(block, block + c, 0.f);
      const int64_t stop = std::min(P, p0 + kBlock);
      for (int64_t p = p0; p < stop; ++p) {
        const int64_t i = (b * P + p) * c;
#pragma omp simd
        for (int64_t j = 0; j < c; ++j) block[j] += term(i + j);
      }
      for (int64_t j = 0; j < c; ++j) total_v[j] += block[j];
    }
    for (int64_t j = 0; j < c; ++j) out[b * c + j] = float(total_v[j] * scale);
  }
}

template <typename S, int64_t kC, bool kRelu>
void excite_mean_impl(const at::Tensor& x, at::Tensor& mean) {
  const auto* __restrict xp = ptr<S>(x);
  sample_sums<kC>(x.size(0), x.size(1), x.size(2), 1.0 / double(x.size(1)),
                  [=](int64_t i) { return excited<S, kRelu>(xp[i]); }, mean.data_ptr<float>());
}

template <typename S, int64_t kC, bool kRelu>
void excite_apply_impl(const at::Tensor& x, const at::Tensor& w, const at::Tensor& s, at::Tensor& out) {
  const int64_t B = x.size(0), P = x.size(1), c = kC > 0 ? kC : x.size(2);
  const auto* __restrict xp = ptr<S>(x);
  const auto* __restrict sp = s.defined() ? ptr<S>(s) : nullptr;
  const float* __restrict wp = w.data_ptr<float>();
  auto* __restrict op = ptr<S>(out);
  for (int64_t r = 0; r < B * P; ++r) {
    const float* __restrict wb = wp + (r / P) * c;
    const int64_t i = r * c;
    if (sp) {
#pragma omp simd
      for (int64_t j = 0; j < c; ++j) op[i + j] = S::store(excited<S, kRelu>(xp[i + j]) * wb[j] + S::load(sp[i + j]));
    } else {
#pragma omp simd
      for (int64_t j = 0; j < c; ++j) op[i + j] = S::store(excited<S, kRelu>(xp[i + j]) * wb[j]);
    }
  }
}

template <typename S, int64_t kC, bool kRelu>
void excite_grad_gate_impl(const at::Tensor& g, const at::Tensor& x, at::Tensor& grad_w) {
  const auto* __restrict xp = ptr<S>(x);
  const auto* __restrict gp = ptr<S>(g);
  sample_sums<kC>(x.size(0), x.size(1), x.size(2), 1.0,
                  [=](int64_t i) { return S::load(gp[i]) * excited<S, kRelu>(xp[i]); }, grad_w.data_ptr<float>());
}

template <typename S, int64_t kC, bool kRelu>
void excite_grad_input_impl(const at::Tensor& g, const at::Tensor& x, const at::Tensor& w, const at::Tensor& gm,
                            at::Tensor& grad_x) {
  const int64_t B = x.size(0), P = x.size(1), c = kC > 0 ? kC : x.size(2);
  const auto* __restrict xp = ptr<S>(x);
  const auto* __restrict gp = ptr<S>(g);
  const float* __restrict wp = w.data_ptr<float>();
  const float* __restrict mp = gm.data_ptr<float>();
  auto* __restrict dp = ptr<S>(grad_x);
  const float inv = 1.f / float(P);
  for (int64_t b = 0; b < B; ++b) {
    std::vector<float> share_v(c);  // the mean's gradient, per position
    float* __restrict share = share_v.data();
    for (int64_t j = 0; j < c; ++j) share[j] = mp[b * c + j] * inv;
    const float* __restrict wb = wp + b * c;
    for (int64_t p = 0; p < P; ++p) {
      const int64_t i = (b * P + p) * c;
#pragma omp simd
      for (int64_t j = 0; j < c; ++j) {
        const float v = S::load(gp[i + j]) * wb[j] + share[j];
        dp[i + j] = S::store(kRelu ? (S::load(xp[i + j]) > 0.f ? v : 0.f) : v);
      }
    }
  }
}

void check_gate(const at::Tensor& x, const at::Tensor& w, const char* name) {
  TORCH_CHECK(x.device().is_cpu() && x.is_contiguous() && x.dim() == 3, name, ": x is contiguous (B, positions, C) rows");
  TORCH_CHECK(w.scalar_type() == at::kFloat && w.is_contiguous() && w.dim() == 2 && w.size(0) == x.size(0)
                  && w.size(1) == x.size(2), name, ": a contiguous float32 (B, C)");
}

// Calls f(S, kC, kRelu) for x's storage and channel count and the flag.
template <typename F>
void dispatch_excite(const at::Tensor& x, bool with_relu, F f) {
  dispatch(x, x.size(2), [&](auto s, auto k) {
    if (with_relu)
      f(s, k, std::true_type{});
    else
      f(s, k, std::false_type{});
  });
}

at::Tensor excite_mean(const at::Tensor& x, bool with_relu) {
  TORCH_CHECK(x.device().is_cpu() && x.is_contiguous() && x.dim() == 3, "excite_mean: contiguous (B, positions, C) rows");
  auto mean = at::empty({x.size(0), x.size(2)}, x.options().dtype(at::kFloat));
  dispatch_excite(x, with_relu, [&](auto s, auto k, auto r) {
    excite_mean_impl<decltype(s), decltype(k)::value, decltype(r)::value>(x, mean);
  });
  return mean;
}

at::Tensor excite_apply(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& shortcut,
                        bool with_relu) {
  check_gate(x, w, "excite_apply");
  const at::Tensor s = shortcut.has_value() ? *shortcut : at::Tensor();
  if (s.defined()) check_like(s, x, "excite_apply shortcut");
  auto out = at::empty_like(x);
  dispatch_excite(x, with_relu, [&](auto st, auto k, auto r) {
    excite_apply_impl<decltype(st), decltype(k)::value, decltype(r)::value>(x, w, s, out);
  });
  return out;
}

at::Tensor excite_grad_gate(const at::Tensor& g, const at::Tensor& x, bool with_relu) {
  check_like(g, x, "excite_grad_gate g");
  auto grad_w = at::empty({x.size(0), x.size(2)}, x.options().dtype(at::kFloat));
  check_gate(x, grad_w, "excite_grad_gate");
  dispatch_excite(x, with_relu, [&](auto s, auto k, auto r) {
    excite_grad_gate_impl<decltype(s), decltype(k)::value, decltype(r)::value>(g, x, grad_w);
  });
  return grad_w;
}

at::Tensor excite_grad_input(const at::Tensor& g, const at::Tensor& x, const at::Tensor& w, const at::Tensor& gm,
                             bool with_relu) {
  check_like(g, x, "excite_grad_input g");
  check_gate(x, w, "excite_grad_input");
  check_gate(x, gm, "excite_grad_input (the mean's gradient)");
  auto grad_x = at::empty_like(x);
  dispatch_excite(x, with_relu, [&](auto s, auto k, auto r) {
    excite_grad_input_impl<decltype(s), decltype(k)::value, decltype(r)::value>(g, x, w, gm, grad_x);
  });
  return grad_x;
}

}  // namespace

TORCH_LIBRARY(asd_cpu, m) {
  m.def("bn_relu_forward(Tensor x, float eps, bool with_normed) -> Tensor[]");
  m.def("bn_relu_backward(Tensor grad_relu, Tensor? grad_normed, Tensor x, Tensor mean, Tensor invstd, Tensor? grad_input) -> Tensor");
  m.def("stem_forward(Tensor h, float eps) -> Tensor[]");
  m.def("stem_backward(Tensor grad_y, Tensor h, Tensor where, Tensor y, Tensor mean, Tensor invstd) -> Tensor");
  m.def("pool_forward(Tensor x) -> Tensor[]");
  m.def("pool_backward(Tensor grad_y, Tensor where, int H, int W) -> Tensor");
  m.def("stem_conv_forward(Tensor x, Tensor w, float eps, bool out_bf16) -> Tensor[]");
  m.def("stem_conv_backward(Tensor grad_y, Tensor x, Tensor w, Tensor where, Tensor y, Tensor mean, Tensor invstd) -> Tensor");
  m.def("frames(Tensor wave, int n_fft, int hop, Tensor window, bool reflect) -> Tensor");
  m.def("unfold_rows(Tensor x, int k, int stride, bool out_bf16) -> Tensor");
  m.def("mixup(Tensor x, Tensor perm, Tensor lam) -> Tensor");
  m.def("magnitude(Tensor spec, int first) -> Tensor");
  m.def("spectrum_norm(Tensor spec, int first, float eps, bool training, Tensor mean, Tensor var) -> Tensor[]");
  m.def("excite_mean(Tensor x, bool with_relu) -> Tensor");
  m.def("excite_apply(Tensor x, Tensor w, Tensor? shortcut, bool with_relu) -> Tensor");
  m.def("excite_grad_gate(Tensor g, Tensor x, bool with_relu) -> Tensor");
  m.def("excite_grad_input(Tensor g, Tensor x, Tensor w, Tensor gm, bool with_relu) -> Tensor");
}

TORCH_LIBRARY_IMPL(asd_cpu, CPU, m) {
  m.impl("bn_relu_forward", bn_relu_forward);
  m.impl("bn_relu_backward", bn_relu_backward);
  m.impl("stem_forward", stem_forward);
  m.impl("stem_backward", stem_backward);
  m.impl("pool_forward", pool_forward);
  m.impl("pool_backward", pool_backward);
  m.impl("stem_conv_forward", stem_conv_forward);
  m.impl("stem_conv_backward", stem_conv_backward);
  m.impl("frames", frames);
  m.impl("unfold_rows", unfold_rows);
  m.impl("mixup", mixup);
  m.impl("magnitude", magnitude);
  m.impl("spectrum_norm", spectrum_norm);
  m.impl("excite_mean", excite_mean);
  m.impl("excite_apply", excite_apply);
  m.impl("excite_grad_gate", excite_grad_gate);
  m.impl("excite_grad_input", excite_grad_input);
}
