// Fused CPU loops of the ensemble kernel (multirun/kernel/build.py compiles them once per
// machine with torch.utils.cpp_extension; multirun/kernel/engine.py calls them per chunk).
//
// transform: fp16/fp32 logits (m, n, C) -> log_softmax over C -> z-score with the given
//            per-(class, example) mean and 1/std -> (m, C, n) float32 in the GEMM layout.
// moments:   the chunk's per-(class, example) mean and sum of squared deviations across its m
//            models (float64), merged into running statistics (Chan et al.).
// Both read every value once; NaN/inf are detected on the raw bits.
// topk:      the k largest values of every row of a finished (Nq, Nt) kernel block and their
//            columns, sorted (search.py: one read of the block, 2-3x faster than torch.topk).
//
// log_softmax is evaluated as (x - max) - log1p(s), s = sum over the classes other than the
// top one of exp(x - max): the top class's log-probability -log1p(s) keeps its relative
// precision however confident the model is, where log(1 + s) in float32 would round it to a
// multiple of 6e-8. Each log-probability is the double (x - max) - log1p(s), x - max formed in
// double (exact for fp16/fp32 inputs) and log1p(s) the float value; the statistics take
// that double, and the transform forms (value - mean) in double before rounding it to float
// and scaling by the float 1/std, so a column whose values differ across models by a few
// float32 ulps (two models that nearly agree, or the same gap to the top class everywhere)
// keeps its z-score. Where s < 2^-100 (the top two logits more than ~69 apart) float32 would
// lose s (it underflows below 1e-45), so s, the top class's log-probability and its z-score
// are computed in double there (exact down to s ~ 1e-308, a gap of ~708): the statistics see
// the double value and the transform writes (lp - mean) * inv formed in double, with the
// column's double mean and 1/std (std may lie far below float32's range). A column whose value
// takes that double path in every model (the same class leads by more than ~69 in every model)
// also gets its sum of squared deviations scaled by 2^512 (m2_tiny): unscaled, the squares of
// deviations below ~1e-154 (leads beyond ~355) underflow float64.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>
#include <immintrin.h>

namespace {
constexpr int64_t TILE = 256;
// Floats past C * TILE in each raw slab buffer: the AVX2 transpose loads 8 classes of a row
// at a time, past the last class of the last row.
constexpr int64_t RAW_SLACK = 8;
// Below this s = sum of exp(x_c - max) over the non-top classes, the top class's
// log-probability is recomputed in double (2^-100: float32 still has full relative precision).
constexpr float SMALL_S = 7.88860905e-31f;
// Deviations of a column whose every value took that path are below ~2^-99: scaled by 2^512
// their squares (below 2^826, summed over up to 2^100 models) neither overflow nor underflow
// down to deviations of 2^-1022 (engine.py's TINY_SCALE).
constexpr double TINY_SCALE = 1.3407807929942597e+154;  // 2^512


// Contiguous conversion of k values to float32 in one pass that also checks them: true if any
// is NaN/inf (read on the raw bits: exponent all ones). fp16 by F16C/AVX-512 conversions,
// checked 8/16 values at a time, when compiled for them.
inline bool to_float(const at::Half* s, int64_t k, float* out) {
  const uint16_t* b = reinterpret_cast<const uint16_t*>(s);
  int64_t i = 0;
  uint16_t any = 0;
#if defined(__AVX512F__)
  const __m256i exponent = _mm256_set1_epi16(0x7C00);
  __m256i bad = _mm256_setzero_si256();
  for (; i + 16 <= k; i += 16) {
    __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + i));
    bad = _mm256_or_si256(bad, _mm256_cmpeq_epi16(_mm256_and_si256(h, exponent), exponent));
    _mm512_storeu_ps(out + i, _mm512_cvtph_ps(h));
  }
  any |= static_cast<uint16_t>(!_mm256_testz_si256(bad, bad));
#elif defined(__F16C__)
  const __m128i exponent = _mm_set1_epi16(0x7C00);
  __m128i bad = _mm_setzero_si128();
  for (; i + 8 <= k; i += 8) {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + i));
    bad = _mm_or_si128(bad, _mm_cmpeq_epi16(_mm_and_si128(h, exponent), exponent));
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(h));
  }
  any |= static_cast<uint16_t>(!_mm_testz_si128(bad, bad));
#endif
  for (; i < k; ++i) {
    any |= static_cast<uint16_t>((b[i] & 0x7C00u) == 0x7C00u);
    out[i] = static_cast<float>(s[i]);
  }
  return any != 0;
}
inline bool to_float(const float* s, int64_t k, float* out) {
  uint32_t any = 0;
  for (int64_t j = 0; j < k; ++j) {
    uint32_t b; std::memcpy(&b, s + j, 4);
    any |= static_cast<uint32_t>((b & 0x7F800000u) == 0x7F800000u);
    out[j] = s[j];
  }
  return any != 0;
}

// One (example tile, model) slab s (len, C) into class-major float32 buf[c * TILE + j]: a
// contiguous conversion into raw (len, C), then (with AVX-512) gathers of 16 examples per
// class, (with AVX2) 8 x 8 register transposes (AVX2 gathers were no faster than scalar code
// on a Zen 3), else a scalar transpose. raw holds C * TILE + RAW_SLACK floats. True if NaN/inf
// seen.
template <typename T>
inline bool class_major(const T* s, int64_t len, int64_t C, float* raw, float* buf) {
  const bool bad = to_float(s, len * C, raw);
  int64_t j0 = 0;
#if defined(__AVX512F__)
  const __m512i lanes = _mm512_mullo_epi32(
      _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
      _mm512_set1_epi32(static_cast<int>(C)));
  for (; j0 + 16 <= len; j0 += 16)
    for (int64_t c = 0; c < C; ++c) {
      const __m512i at = _mm512_add_epi32(lanes, _mm512_set1_epi32(static_cast<int>(c)));
      _mm512_storeu_ps(buf + c * TILE + j0, _mm512_i32gather_ps(at, raw + j0 * C, 4));
    }
#elif defined(__AVX2__)
  // 8 examples x 8 classes at a time: eight row loads, an 8 x 8 register transpose, the
  // columns of the classes that exist stored (the loads may read RAW_SLACK floats past len * C).
  for (; j0 + 8 <= len; j0 += 8)
    for (int64_t c0 = 0; c0 < C; c0 += 8) {
      const float* r = raw + j0 * C + c0;
      __m256 a0 = _mm256_loadu_ps(r), a1 = _mm256_loadu_ps(r + C),
             a2 = _mm256_loadu_ps(r + 2 * C), a3 = _mm256_loadu_ps(r + 3 * C),
             a4 = _mm256_loadu_ps(r + 4 * C), a5 = _mm256_loadu_ps(r + 5 * C),
             a6 = _mm256_loadu_ps(r + 6 * C), a7 = _mm256_loadu_ps(r + 7 * C);
      const __m256 t0 = _mm256_unpacklo_ps(a0, a1), t1 = _mm256_unpackhi_ps(a0, a1),
                   t2 = _mm256_unpacklo_ps(a2, a3), t3 = _mm256_unpackhi_ps(a2, a3),
                   t4 = _mm256_unpacklo_ps(a4, a5), t5 = _mm256_unpackhi_ps(a4, a5),
                   t6 = _mm256_unpacklo_ps(a6, a7), t7 = _mm256_unpackhi_ps(a6, a7);
      const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE),
                   u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE),
                   u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE),
                   u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
      const __m256 col[8] = {_mm256_permute2f128_ps(u0, u4, 0x20),
                             _mm256_permute2f128_ps(u1, u5, 0x20),
                             _mm256_permute2f128_ps(u2, u6, 0x20),
                             _mm256_permute2f128_ps(u3, u7, 0x20),
                             _mm256_permute2f128_ps(u0, u4, 0x31),
                             _mm256_permute2f128_ps(u1, u5, 0x31),
                             _mm256_permute2f128_ps(u2, u6, 0x31),
                             _mm256_permute2f128_ps(u3, u7, 0x31)};
      const int64_t k = std::min<int64_t>(8, C - c0);
      for (int64_t c = 0; c < k; ++c) _mm256_storeu_ps(buf + (c0 + c) * TILE + j0, col[c]);
    }
#endif
  for (int64_t j = j0; j < len; ++j)
    for (int64_t c = 0; c < C; ++c) buf[c * TILE + j] = raw[j * C + c];
  return bad;
}

// exp(x) for x <= 0 by Cody-Waite reduction and the Cephes expf polynomial (about 1 ulp),
// subnormal results included (as torch.exp; below -103 the result is 0 in float32 anyway);
// plain float arithmetic so that the loops vectorise without -ffast-math.
inline float exp_nonpositive(float x) {
  x = x < -103.0f ? -103.0f : x;
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // 2^n as 2^n1 * 2^n2, each a normal float, so that n down to -149 is exact
  const int32_t ni = static_cast<int32_t>(n), n1 = ni / 2, n2 = ni - n1;
  const int32_t b1 = (n1 + 127) << 23, b2 = (n2 + 127) << 23;
  float s1, s2;
  std::memcpy(&s1, &b1, 4);
  std::memcpy(&s2, &b2, 4);
  return p * s1 * s2;
}

// log(x) for positive normal x by the Cephes logf polynomial (about 1 ulp), branch-free.
inline float log_positive(float x) {
  int32_t bits;
  std::memcpy(&bits, &x, 4);
  float e = static_cast<float>(((bits >> 23) & 0xff) - 126);
  bits = (bits & 0x807fffff) | 0x3f000000;  // mantissa in [0.5, 1)
  float f;
  std::memcpy(&f, &bits, 4);
  const bool small = f < 0.707106781186547524f;
  e = small ? e - 1.0f : e;
  f = small ? f + f - 1.0f : f - 1.0f;
  const float z = f * f;
  float y = 7.0376836292e-2f;
  y = y * f - 1.1514610310e-1f;
  y = y * f + 1.1676998740e-1f;
  y = y * f - 1.2420140846e-1f;
  y = y * f + 1.4249322787e-1f;
  y = y * f - 1.6668057665e-1f;
  y = y * f + 2.0000714765e-1f;
  y = y * f - 2.4999993993e-1f;
  y = y * f + 3.3333331174e-1f;
  y = y * f * z;
  y += -2.12194440e-4f * e;
  y += -0.5f * z;
  return f + y + 0.693359375f * e;
}

// log1p(s) for s >= 0 (Goldberg's trick on top of log_positive: a few ulp, branch-free).
inline float log1p_nonnegative(float s) {
  const float u = 1.0f + s;
  const float d = u - 1.0f;
  return d == 0.0f ? s : log_positive(u) * (s / d);
}

template <typename T>
inline bool load_tile(const T* s, int64_t len, int64_t C, bool lsm, float* raw, float* buf,
                      float* mx, float* lg, float* top, double* tv, int32_t* small,
                      int64_t& nsmall) {
  // On return buf[c * TILE + j] holds x and the log-probability is (x - mx[j]) - lg[j] with
  // lg = log1p(sum over c != top of exp(x_c - mx)), except where s < SMALL_S: there
  // small[0..nsmall) lists the j and tv[j] holds the top class's log-probability -log1p(s)
  // with s summed in double (elsewhere tv is not written). Without log_softmax mx = lg = 0,
  // top = -1 and nsmall = 0.
  const bool bad = class_major(s, len, C, raw, buf);
  nsmall = 0;
  if (!lsm) {
    for (int64_t j = 0; j < len; ++j) {
      mx[j] = lg[j] = 0.f;
      top[j] = -1.f;
    }
    return bad;
  }
  for (int64_t j = 0; j < len; ++j) {
    mx[j] = buf[j];
    top[j] = 0.f;
  }
  for (int64_t c = 1; c < C; ++c) {
    const float fc = static_cast<float>(c);
    for (int64_t j = 0; j < len; ++j) {
      const float v = buf[c * TILE + j], t = top[j];
      const bool gt = v > mx[j];
      top[j] = t + (gt ? fc - t : 0.f);  // not a select of top[j]: GCC makes that a masked
      mx[j] = gt ? v : mx[j];            // store, microcoded and slow on AMD CPUs
    }
  }
  for (int64_t j = 0; j < len; ++j) lg[j] = 0.f;
  for (int64_t c = 0; c < C; ++c) {
    const float* b = buf + c * TILE;
    const float fc = static_cast<float>(c);
    for (int64_t j = 0; j < len; ++j)
      lg[j] += exp_nonpositive(b[j] - mx[j]) * (top[j] == fc ? 0.f : 1.f);  // no masked loads
  }
  uint32_t any_small = 0;  // (an OR vectorises; a float min would not without -ffast-math)
  for (int64_t j = 0; j < len; ++j) any_small |= static_cast<uint32_t>(lg[j] < SMALL_S);
  if (any_small)
    for (int64_t j = 0; j < len; ++j) {  // branch-free append of the j with a tiny s
      small[nsmall] = static_cast<int32_t>(j);
      nsmall += lg[j] < SMALL_S;
    }
  for (int64_t j = 0; j < len; ++j) lg[j] = log1p_nonnegative(lg[j]);  // the sum lies in [0, C)
  for (int64_t k = 0; k < nsmall; ++k) {  // rare: the top class leads by more than ~69
    const int64_t j = small[k], t = static_cast<int64_t>(top[j]);
    const double m = mx[j];
    double sum = 0.0;
    for (int64_t c = 0; c < C; ++c)
      if (c != t) sum += std::exp(static_cast<double>(raw[j * C + c]) - m);
    tv[j] = -std::log1p(sum);
  }
  return bad;
}

template <typename T>
void transform_impl(const T* src, float* dst, const float* inv, const double* mean64,
                    const double* inv64, int64_t m, int64_t n, int64_t C, bool lsm) {
  const int64_t tiles = (n + TILE - 1) / TILE;
  at::parallel_for(0, m * tiles, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> raw(C * TILE + RAW_SLACK), buf(C * TILE), mx(TILE), acc(TILE), top(TILE);
    std::vector<double> tv(TILE);
    std::vector<int32_t> small(TILE);
    int64_t nsmall = 0;
    for (int64_t t = begin; t < end; ++t) {
      const int64_t mi = t / tiles, i0 = (t % tiles) * TILE, len = std::min(TILE, n - i0);
      load_tile(src + (mi * n + i0) * C, len, C, lsm, raw.data(), buf.data(), mx.data(),
                acc.data(), top.data(), tv.data(), small.data(), nsmall);
      for (int64_t c = 0; c < C; ++c) {
        float* d = dst + (mi * C + c) * n + i0;
        const float* b = buf.data() + c * TILE;
        const double* mc = mean64 + c * n + i0;
        const float* ic = inv + c * n + i0;
        const float* x = mx.data();
        const float* l = acc.data();
        for (int64_t j = 0; j < len; ++j) {  // value - mean in double: no float cancellation
          const double y = (static_cast<double>(b[j]) - static_cast<double>(x[j])) - l[j];
          d[j] = static_cast<float>(y - mc[j]) * ic[j];
        }
      }
      for (int64_t k = 0; k < nsmall; ++k) {  // top class of a tiny s: z-score in double
        const int64_t j = small[k], c = static_cast<int64_t>(top[j]), o = c * n + i0 + j;
        dst[(mi * C + c) * n + i0 + j] = static_cast<float>((tv[j] - mean64[o]) * inv64[o]);
      }
    }
  });
}

// Per (class, example): moments over the m models of this chunk (sums of y - y0 in double with
// the shift y0 = the chunk's first model), merged into the running (count, mean, m2) by Chan's
// pairwise rule; m2_tiny the same m2 times TINY_SCALE^2 where every value of the column so far
// took the double top-class path (NaN elsewhere). Returns true if any input value was NaN/inf.
template <typename T>
bool moments_impl(const T* src, double* mean, double* m2, double* m2_tiny, int64_t count,
                  int64_t m, int64_t n, int64_t C, bool lsm) {
  const int64_t tiles = (n + TILE - 1) / TILE;
  std::vector<char> bad_tile(tiles, 0);
  const double total = static_cast<double>(count + m);
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> raw(C * TILE + RAW_SLACK), buf(C * TILE), mx(TILE), acc(TILE), top(TILE);
    std::vector<double> y0(C * TILE), a1(C * TILE), a2(C * TILE), a3(C * TILE), tv(TILE),
        w(TILE);
    std::vector<int32_t> small(TILE), tiny(C * TILE);
    int64_t nsmall = 0;
    for (int64_t t = begin; t < end; ++t) {
      const int64_t i0 = t * TILE, len = std::min(TILE, n - i0);
      bool bad = false;
      std::fill(a1.begin(), a1.end(), 0.0);
      std::fill(a2.begin(), a2.end(), 0.0);
      std::fill(a3.begin(), a3.end(), 0.0);
      std::fill(tiny.begin(), tiny.end(), 0);
      for (int64_t mi = 0; mi < m; ++mi) {
        bad |= load_tile(src + (mi * n + i0) * C, len, C, lsm, raw.data(), buf.data(),
                         mx.data(), acc.data(), top.data(), tv.data(), small.data(), nsmall);
        // with_top: the top class's log-probability is w[j] (double), else every one is
        // (x - mx) - lg with both parts kept in double
        auto accumulate = [&](auto with_top) {
          for (int64_t c = 0; c < C; ++c) {
            const float fc = static_cast<float>(c);
            const float* b = buf.data() + c * TILE;
            double* z = y0.data() + c * TILE;
            double* p = a1.data() + c * TILE;
            double* q = a2.data() + c * TILE;
            const float* x = mx.data();
            const float* l = acc.data();
            const float* tp = top.data();
            const double* v = w.data();
            auto value = [&](int64_t j) {
              const double y = (static_cast<double>(b[j]) - static_cast<double>(x[j])) - l[j];
              if constexpr (decltype(with_top)::value) return tp[j] == fc ? v[j] : y;
              return y;
            };
            if (mi == 0)
              for (int64_t j = 0; j < len; ++j) z[j] = value(j);
            for (int64_t j = 0; j < len; ++j) {
              const double d = value(j) - z[j];
              p[j] += d;
              q[j] += d * d;
            }
          }
        };
        if (nsmall == 0) {
          accumulate(std::false_type{});
        } else {  // some top classes hold the double tv
          for (int64_t j = 0; j < len; ++j) w[j] = -static_cast<double>(acc[j]);
          for (int64_t k = 0; k < nsmall; ++k) w[small[k]] = tv[small[k]];
          accumulate(std::true_type{});
          for (int64_t k = 0; k < nsmall; ++k) {  // the scaled squares of those top classes
            const int64_t j = small[k], o = static_cast<int64_t>(top[j]) * TILE + j;
            const double d = (tv[j] - y0[o]) * TINY_SCALE;
            a3[o] += d * d;
            tiny[o] += 1;
          }
        }
      }
      for (int64_t c = 0; c < C; ++c)
        for (int64_t j = 0; j < len; ++j) {
          const int64_t k = c * TILE + j, o = c * n + i0 + j;
          const double cmean = y0[k] + a1[k] / m, cm2 = a2[k] - a1[k] * a1[k] / m;
          const double delta = cmean - mean[o], w_delta = static_cast<double>(count) * m / total;
          mean[o] += delta * (m / total);
          m2[o] += cm2 + delta * delta * w_delta;
          if (tiny[k] == m) {  // every value of the chunk tiny: |deviations| < 2^-99
            const double s1 = a1[k] * TINY_SCALE, sd = delta * TINY_SCALE;
            m2_tiny[o] += (a3[k] - s1 * s1 / m) + (count ? sd * sd * w_delta : 0.0);
          } else {
            m2_tiny[o] = std::numeric_limits<double>::quiet_NaN();
          }
        }
      bad_tile[t] = bad;
    }
  });
  return std::any_of(bad_tile.begin(), bad_tile.end(), [](char b) { return b != 0; });
}

// Per row of x (R, N) float32, the k largest values and their columns, sorted by value
// descending, equal values by column ascending. A row is scanned 16 values at a time against
// the k-th best so far (a vectorised compare; most blocks hold no candidate), candidates
// replace the worst of a k-entry min-heap. No NaN expected (the engine's inputs are finite).
void topk_rows(const float* x, int64_t R, int64_t N, int64_t k, float* values, int64_t* index) {
  at::parallel_for(0, R, 1, [&](int64_t begin, int64_t end) {
    std::vector<std::pair<float, int64_t>> heap(k);
    // better(a, b): a ranks above b (larger value, or equal value and smaller column); as the
    // heap's order it keeps the worst entry at the front
    auto better = [](const std::pair<float, int64_t>& a, const std::pair<float, int64_t>& b) {
      return a.first > b.first || (a.first == b.first && a.second < b.second);
    };
    for (int64_t r = begin; r < end; ++r) {
      const float* row = x + r * N;
      for (int64_t j = 0; j < k; ++j) heap[j] = {row[j], j};
      std::make_heap(heap.begin(), heap.end(), better);
      float thr = heap.front().first;
      int64_t j = k;
      auto offer = [&](int64_t c) {
        if (row[c] > thr) {  // equal to the worst: its column is smaller, it stays
          std::pop_heap(heap.begin(), heap.end(), better);
          heap.back() = {row[c], c};
          std::push_heap(heap.begin(), heap.end(), better);
          thr = heap.front().first;
        }
      };
      for (; j < k + (N - k) % 16; ++j) offer(j);
      for (; j < N; j += 16) {
        bool any;
#if defined(__AVX2__)
        const __m256 t = _mm256_set1_ps(thr);
        any = _mm256_movemask_ps(_mm256_or_ps(
                  _mm256_cmp_ps(_mm256_loadu_ps(row + j), t, _CMP_GT_OQ),
                  _mm256_cmp_ps(_mm256_loadu_ps(row + j + 8), t, _CMP_GT_OQ))) != 0;
#else
        uint32_t bits = 0;
        for (int64_t i = 0; i < 16; ++i) bits |= static_cast<uint32_t>(row[j + i] > thr);
        any = bits != 0;
#endif
        if (any)
          for (int64_t i = 0; i < 16; ++i) offer(j + i);
      }
      std::sort_heap(heap.begin(), heap.end(), better);  // best first
      for (int64_t i = 0; i < k; ++i) {
        values[r * k + i] = heap[i].first;
        index[r * k + i] = heap[i].second;
      }
    }
  });
}
}  // namespace

// x: (m, n, C) half/float contiguous; inv: (C, n) float 1/std; mean64, inv64: (C, n) double
// mean and 1/std (1/std used for the top class where s is tiny); out: (m, C, n) float.
void transform(torch::Tensor x, torch::Tensor inv, torch::Tensor mean64, torch::Tensor inv64,
               torch::Tensor out, bool lsm) {
  TORCH_CHECK(x.is_contiguous() && inv.is_contiguous() && mean64.is_contiguous() &&
              inv64.is_contiguous() && out.is_contiguous(), "contiguous tensors expected");
  const int64_t m = x.size(0), n = x.size(1), C = x.size(2);
  TORCH_CHECK(out.size(0) == m && out.size(1) == C && out.size(2) == n, "bad out shape");
  TORCH_CHECK(mean64.scalar_type() == at::kDouble && inv64.scalar_type() == at::kDouble &&
              mean64.size(0) == C && mean64.size(1) == n, "bad double statistics tensors");
  auto run = [&](auto* src) {
    transform_impl(src, out.data_ptr<float>(), inv.data_ptr<float>(), mean64.data_ptr<double>(),
                   inv64.data_ptr<double>(), m, n, C, lsm);
  };
  if (x.scalar_type() == at::kHalf) run(x.data_ptr<at::Half>());
  else if (x.scalar_type() == at::kFloat) run(x.data_ptr<float>());
  else TORCH_CHECK(false, "float16 or float32 logits expected");
}

// x: (m, n, C) half/float contiguous; mean, m2, m2_tiny: running (C, n) float64 statistics of
// `count` earlier models (m2_tiny: 0 when count is 0), updated in place. Returns whether any
// value of x was NaN/inf.
bool moments(torch::Tensor x, torch::Tensor mean, torch::Tensor m2, torch::Tensor m2_tiny,
             int64_t count, bool lsm) {
  TORCH_CHECK(x.is_contiguous() && mean.is_contiguous() && m2.is_contiguous() &&
              m2_tiny.is_contiguous(), "contiguous tensors expected");
  const int64_t m = x.size(0), n = x.size(1), C = x.size(2);
  for (const auto& t : {mean, m2, m2_tiny})
    TORCH_CHECK(t.scalar_type() == at::kDouble && t.size(0) == C && t.size(1) == n,
                "bad statistics tensors");
  bool bad = false;
  auto run = [&](auto* src) {
    bad = moments_impl(src, mean.data_ptr<double>(), m2.data_ptr<double>(),
                       m2_tiny.data_ptr<double>(), count, m, n, C, lsm);
  };
  if (x.scalar_type() == at::kHalf) run(x.data_ptr<at::Half>());
  else if (x.scalar_type() == at::kFloat) run(x.data_ptr<float>());
  else TORCH_CHECK(false, "float16 or float32 logits expected");
  return bad;
}

// x: (R, N) float32 contiguous, 1 <= k <= N -> (values (R, k) float32, index (R, k) int64),
// each row sorted by value descending, equal values by column ascending.
std::tuple<torch::Tensor, torch::Tensor> topk(torch::Tensor x, int64_t k) {
  TORCH_CHECK(x.is_contiguous() && x.dim() == 2 && x.scalar_type() == at::kFloat,
              "a contiguous (R, N) float32 tensor expected");
  const int64_t R = x.size(0), N = x.size(1);
  TORCH_CHECK(k >= 1 && k <= N, "k must lie in [1, N]");
  auto values = torch::empty({R, k}, x.options());
  auto index = torch::empty({R, k}, x.options().dtype(at::kLong));
  topk_rows(x.data_ptr<float>(), R, N, k, values.data_ptr<float>(), index.data_ptr<int64_t>());
  return {values, index};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("transform", &transform, "log_softmax + z-score of a logit chunk into the GEMM layout");
  m.def("moments", &moments, "merge a logit chunk into running per-(class, example) moments");
  m.def("topk", &topk, "the k largest values of every row and their columns, sorted");
}
