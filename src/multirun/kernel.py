"""The ensemble correlation kernel, streamed over models as one GEMM per chunk.

Reference semantics (``seeds/ensemble-kernel-README.md``)::

    z = log_softmax(logits.float(), -1)                       # (M, N, C)
    z = (z - z.mean(0)) / z.std(0)                            # unbiased std across the M models
    K = sum_c  z_test[..., c].T @ z_train[..., c] / M / C     # (N_test, N_train)

i.e. the per-class correlation across models, averaged over the classes.

The engine here computes exactly that without ever holding all models or the
dense kernel in memory:

1. a first streaming pass over chunks of models gives the per-(example, class)
   mean and unbiased std across the selected models (Chan's pairwise merge in
   float64, so the statistics do not drift with the number of models);
2. for each block of query rows, a second pass over the same chunks normalises
   the chunk and stacks classes into the inner dimension, so one chunk is one
   matrix product ``(Nq_block, m*C) @ (m*C, Nt)`` accumulated in float32;
   the top-k of the finished block is kept and the block is dropped.

Memory is bounded by ``chunk_models`` and ``block`` (``block * Nt`` floats for
the accumulator plus ``chunk_models * (block + Nt) * C`` for one normalised
chunk), never by the number of models.

Deviation from the reference, on degenerate input only: where the std across
models is 0 up to float32 rounding (every model gives the same value; std <=
``STD_FLOOR * |mean|``), the reference divides 0 (or rounding noise) by 0 (or
rounding noise) and its kernel row is NaN (or noise); here the normalised value
is 0, so that (example, class) contributes nothing to the correlation.
"""

from __future__ import annotations

import contextlib
import math
import mmap as mmap_module
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from multirun.io import ContractError, load_npy, pick_device, save_npz

PRECISIONS = ("fp32", "tf32", "bf16")
# A std across models below this fraction of |mean| is float32 rounding noise (the
# values are equal up to rounding): the normalised value there is set to 0.
STD_FLOOR = 8 * torch.finfo(torch.float32).eps
SUPPORTED_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))


# --------------------------------------------------------------------------- in memory


def _class_index(classes: Sequence[int] | None, num_classes: int) -> list[int]:
    """Validated list of classes whose correlations are averaged (all when None)."""
    if classes is None:
        return list(range(num_classes))
    cls = [int(c) for c in classes]
    if not cls or len(set(cls)) != len(cls) or min(cls) < 0 or max(cls) >= num_classes:
        raise ContractError(f"classes={list(classes)}: expected distinct class indices in "
                            f"[0, {num_classes})")
    return cls


def normalize(logits: Tensor, log_softmax: bool = True) -> Tensor:
    """Reference normalisation: (M, N, C) any float dtype -> (M, N, C) float32.

    ``log_softmax`` over classes (optional), then z-score across models (axis 0)
    with the unbiased std. Where the std is 0 the result is 0 (the reference: NaN).
    """
    if logits.ndim != 3 or logits.shape[0] < 2:
        raise ContractError(f"normalize: expected logits (M >= 2, N, C), got {tuple(logits.shape)}")
    x = logits.float()
    if log_softmax:
        x = x.log_softmax(-1)
    mean, std = x.mean(0, keepdim=True), x.std(0, keepdim=True)
    return (x - mean) * _inverse_std(std, mean)


def _inverse_std(std: Tensor, mean: Tensor) -> Tensor:
    """1 / std, and 0 where std is 0 up to float32 rounding (<= STD_FLOOR * |mean|)."""
    ok = std > STD_FLOOR * mean.abs()
    return torch.where(ok & (std > 0), 1.0 / std, torch.zeros_like(std))


def _stack_classes(z: Tensor, cls: list[int]) -> Tensor:
    """(m, n, C) -> (n, m * len(cls)): classes stacked into the inner (GEMM) dimension."""
    if len(cls) != z.shape[-1]:
        z = z[..., cls]
    return z.permute(1, 0, 2).reshape(z.shape[1], -1)


def ensemble_kernel(queries: Tensor, keys: Tensor, *, log_softmax: bool = True,
                    classes: Sequence[int] | None = None) -> Tensor:
    """In-memory exact kernel: (M, Nq, C), (M, Nt, C) -> (Nq, Nt) float32.

    ``classes``: average the per-class correlations over these classes only
    (a single class gives that class's kernel alone); None = all classes.
    """
    if queries.ndim != 3 or keys.ndim != 3 or queries.shape[0] != keys.shape[0] \
            or queries.shape[2] != keys.shape[2]:
        raise ContractError(f"ensemble_kernel: queries {tuple(queries.shape)} and keys "
                            f"{tuple(keys.shape)} must be (M, N, C) with the same M and C")
    cls = _class_index(classes, queries.shape[2])
    zq = _stack_classes(normalize(queries, log_softmax), cls)
    zk = _stack_classes(normalize(keys, log_softmax), cls)
    return (zq @ zk.T) / (queries.shape[0] * len(cls))


# --------------------------------------------------------------------------- shards


class ShardedLogits:
    """Logit shards ``(S_i, N, C)`` (float16, or float32) memory-mapped as one (M, N, C) stack.

    Models are numbered across shards in the order of ``paths``. Nothing is read
    until :meth:`models` gathers a chunk.
    """

    def __init__(self, paths: Sequence[str | os.PathLike]):
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise ContractError("ShardedLogits: no shard files given")
        self._arrays = [load_npy(p, ndim=3, mmap=True, check_finite=False) for p in self.paths]
        first, ref = self._arrays[0], self.paths[0]
        if first.dtype not in SUPPORTED_DTYPES:
            raise ContractError(f"{ref}: logits have dtype {first.dtype}; expected float16 "
                                "(or float32); rerun the logits stage")
        for path, array in zip(self.paths[1:], self._arrays[1:], strict=True):
            if array.shape[1] != first.shape[1]:
                raise ContractError(f"{path}: {array.shape[1]} examples but {ref} has "
                                    f"{first.shape[1]}; every shard must hold the same examples")
            if array.shape[2] != first.shape[2]:
                raise ContractError(f"{path}: {array.shape[2]} classes but {ref} has "
                                    f"{first.shape[2]}; every shard must hold the same classes")
            if array.dtype != first.dtype:
                raise ContractError(f"{path}: dtype {array.dtype} but {ref} has {first.dtype}; "
                                    "every shard must have the same dtype")
        sizes = [a.shape[0] for a in self._arrays]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.num_models = int(self.offsets[-1])
        self.num_examples = int(first.shape[1])
        self.num_classes = int(first.shape[2])
        self.dtype = first.dtype
        if self.num_models < 2:
            raise ContractError(f"{', '.join(map(str, self.paths))}: {self.num_models} model(s) in "
                                "all; the kernel's std across models needs at least 2")

    def __repr__(self) -> str:
        return (f"ShardedLogits({len(self.paths)} shards, models={self.num_models}, "
                f"examples={self.num_examples}, classes={self.num_classes}, dtype={self.dtype})")

    def shard_of(self, model: int) -> tuple[Path, int]:
        """The shard file holding global model ``model`` and its index inside that file."""
        s = int(np.searchsorted(self.offsets, model, side="right") - 1)
        return self.paths[s], int(model - self.offsets[s])

    def models(self, index: np.ndarray, rows: slice | None = None) -> np.ndarray:
        """Gather models ``index`` across shards: (len(index), N, C) in the shards' dtype.

        ``rows`` restricts the examples read (e.g. one query block).
        """
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        if index.size and (index.min() < 0 or index.max() >= self.num_models):
            raise ContractError(f"model index out of range [0, {self.num_models}) for shards "
                                f"{[str(p) for p in self.paths]}")
        rows = rows if rows is not None else slice(None)
        n = len(range(*rows.indices(self.num_examples)))
        out = np.empty((len(index), n, self.num_classes), dtype=self.dtype)
        shard = np.searchsorted(self.offsets, index, side="right") - 1
        for s in np.unique(shard):
            where = np.flatnonzero(shard == s)
            local = index[where] - self.offsets[s]
            if len(local) > 1 and np.all(np.diff(local) == 1):  # contiguous: one slice read
                block = self._arrays[s][local[0] : local[-1] + 1, rows]
            else:
                block = self._arrays[s][local, rows]
            if len(where) == len(index):
                out[...] = block
            else:
                out[where] = block
            self._release(s)
        return out

    def _release(self, s: int) -> None:
        """Unmap the pages of shard ``s`` read so far (they stay in the page cache).

        Without this, every page of a memory-mapped file that was touched counts in
        the process's resident memory until exit, so streaming 20,000 models would
        look like 24 GB of RSS although only one chunk is in use.
        """
        mm = getattr(self._arrays[s], "_mmap", None)
        if mm is not None and hasattr(mm, "madvise") and hasattr(mmap_module, "MADV_DONTNEED"):
            with contextlib.suppress(OSError, ValueError):
                mm.madvise(mmap_module.MADV_DONTNEED)


# --------------------------------------------------------------------------- engine


def _model_selection(models: np.ndarray | None, num_models: int) -> np.ndarray:
    if models is None:
        return np.arange(num_models, dtype=np.int64)
    sel = np.asarray(models, dtype=np.int64).reshape(-1)
    if sel.size < 2:
        raise ContractError(f"kernel.model_counts: {sel.size} model(s) selected; the std across "
                            "models needs at least 2")
    if sel.min() < 0 or sel.max() >= num_models:
        raise ContractError(f"kernel.model_counts: model indices must lie in [0, {num_models}) "
                            f"(that many models are available), got [{sel.min()}, {sel.max()}]")
    if len(np.unique(sel)) != len(sel):
        raise ContractError("kernel.model_counts: model subset holds repeated indices")
    return sel


def _chunks(sel: np.ndarray, chunk_models: int) -> list[np.ndarray]:
    if chunk_models < 1:
        raise ContractError(f"kernel.chunk_models must be >= 1, got {chunk_models}")
    return [sel[i : i + chunk_models] for i in range(0, len(sel), chunk_models)]


# The per-chunk elementwise work (fp16 -> fp32, log_softmax over classes, z-score, transpose to
# the GEMM layout) costs as much as the GEMM itself in plain torch ops on a CPU (log_softmax over
# a last dimension of 10 is slow). These two fused loops, compiled once per machine with the
# system C++ compiler (torch.utils.cpp_extension), bring it to a few percent of the GEMM. They
# read every value once; NaN/inf are detected on the raw bits. Without a compiler (or with
# MULTIRUN_KERNEL_FUSED=0) the same computation runs as torch ops; on CUDA torch ops are used.
_FUSED_CPP = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>
#include <immintrin.h>

namespace {
constexpr int64_t TILE = 256;


// Load one (example tile, model) slab into class-major buf[c * TILE + j], log_softmax over c.
// Contiguous conversion to float32 (F16C/AVX-512 when compiled for it); true if NaN/inf seen.
inline bool to_float(const at::Half* s, int64_t k, float* out) {
  const uint16_t* b = reinterpret_cast<const uint16_t*>(s);
  uint16_t any = 0;
  int64_t i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= k; i += 16) {
    __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + i));
    _mm512_storeu_ps(out + i, _mm512_cvtph_ps(h));
  }
#elif defined(__F16C__)
  for (; i + 8 <= k; i += 8) {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + i));
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(h));
  }
#endif
  for (; i < k; ++i) out[i] = static_cast<float>(s[i]);
  for (int64_t j = 0; j < k; ++j) any |= static_cast<uint16_t>((b[j] & 0x7C00u) == 0x7C00u);
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

// exp(x) for x <= 0 by Cody-Waite reduction and the Cephes expf polynomial (about 1 ulp);
// plain float arithmetic so that the loops vectorise without -ffast-math.
inline float exp_nonpositive(float x) {
  x = x < -87.0f ? -87.0f : x;
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
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return p * scale;
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

template <typename T>
inline bool load_tile(const T* s, int64_t len, int64_t C, bool lsm, float* raw, float* buf,
                      float* mx, float* lg) {
  // On return buf[c * TILE + j] holds x and the log-probability is (x - mx[j]) - lg[j]
  // (torch's order of operations); without log_softmax mx = lg = 0.
  const bool bad = to_float(s, len * C, raw);
  for (int64_t j = 0; j < len; ++j)
    for (int64_t c = 0; c < C; ++c) buf[c * TILE + j] = raw[j * C + c];
  if (!lsm) {
    for (int64_t j = 0; j < len; ++j) mx[j] = lg[j] = 0.f;
    return bad;
  }
  for (int64_t j = 0; j < len; ++j) mx[j] = buf[j];
  for (int64_t c = 1; c < C; ++c)
    for (int64_t j = 0; j < len; ++j) mx[j] = std::max(mx[j], buf[c * TILE + j]);
  for (int64_t j = 0; j < len; ++j) lg[j] = 0.f;
  for (int64_t c = 0; c < C; ++c) {
    const float* b = buf + c * TILE;
    for (int64_t j = 0; j < len; ++j) lg[j] += exp_nonpositive(b[j] - mx[j]);
  }
  for (int64_t j = 0; j < len; ++j) lg[j] = log_positive(lg[j]);  // the sum lies in [1, C]
  return bad;
}

template <typename T>
void transform_impl(const T* src, float* dst, const float* mean, const float* inv, int64_t m,
                    int64_t n, int64_t C, bool lsm) {
  const int64_t tiles = (n + TILE - 1) / TILE;
  at::parallel_for(0, m * tiles, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> raw(C * TILE), buf(C * TILE), mx(TILE), acc(TILE);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t mi = t / tiles, i0 = (t % tiles) * TILE, len = std::min(TILE, n - i0);
      load_tile(src + (mi * n + i0) * C, len, C, lsm, raw.data(), buf.data(),
                           mx.data(), acc.data());
      for (int64_t c = 0; c < C; ++c) {
        float* d = dst + (mi * C + c) * n + i0;
        const float* b = buf.data() + c * TILE;
        const float* mc = mean + c * n + i0;
        const float* ic = inv + c * n + i0;
        const float* x = mx.data();
        const float* l = acc.data();
        for (int64_t j = 0; j < len; ++j) d[j] = ((b[j] - x[j]) - l[j] - mc[j]) * ic[j];
      }
    }
  });
}

// Per (class, example): moments over the m models of this chunk (sums of y - y0 in double with
// the shift y0 = the chunk's first model), merged into the running (count, mean, m2) by Chan's
// pairwise rule. Returns true if any input value was NaN/inf.
template <typename T>
bool moments_impl(const T* src, double* mean, double* m2, int64_t count, int64_t m, int64_t n,
                  int64_t C, bool lsm) {
  const int64_t tiles = (n + TILE - 1) / TILE;
  std::vector<char> bad_tile(tiles, 0);
  const double total = static_cast<double>(count + m);
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> raw(C * TILE), buf(C * TILE), mx(TILE), acc(TILE);
    std::vector<double> y0(C * TILE), a1(C * TILE), a2(C * TILE);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t i0 = t * TILE, len = std::min(TILE, n - i0);
      bool bad = false;
      std::fill(a1.begin(), a1.end(), 0.0);
      std::fill(a2.begin(), a2.end(), 0.0);
      for (int64_t mi = 0; mi < m; ++mi) {
        bad |= load_tile(src + (mi * n + i0) * C, len, C, lsm, raw.data(), buf.data(),
                         mx.data(), acc.data());
        for (int64_t c = 0; c < C; ++c) {
          const float* b = buf.data() + c * TILE;
          double* z = y0.data() + c * TILE;
          double* p = a1.data() + c * TILE;
          double* q = a2.data() + c * TILE;
          const float* x = mx.data();
          const float* l = acc.data();
          if (mi == 0)
            for (int64_t j = 0; j < len; ++j) z[j] = (b[j] - x[j]) - l[j];
          for (int64_t j = 0; j < len; ++j) {
            const double d = ((b[j] - x[j]) - l[j]) - z[j];
            p[j] += d;
            q[j] += d * d;
          }
        }
      }
      for (int64_t c = 0; c < C; ++c)
        for (int64_t j = 0; j < len; ++j) {
          const int64_t k = c * TILE + j, o = c * n + i0 + j;
          const double cmean = y0[k] + a1[k] / m, cm2 = a2[k] - a1[k] * a1[k] / m;
          const double delta = cmean - mean[o];
          mean[o] += delta * (m / total);
          m2[o] += cm2 + delta * delta * (static_cast<double>(count) * m / total);
        }
      bad_tile[t] = bad;
    }
  });
  return std::any_of(bad_tile.begin(), bad_tile.end(), [](char b) { return b != 0; });
}
}  // namespace

// x: (m, n, C) half/float contiguous; mean, inv: (C, n) float; out: (m, C, n) float.
void transform(torch::Tensor x, torch::Tensor mean, torch::Tensor inv, torch::Tensor out,
               bool lsm) {
  TORCH_CHECK(x.is_contiguous() && mean.is_contiguous() && inv.is_contiguous() &&
              out.is_contiguous(), "contiguous tensors expected");
  const int64_t m = x.size(0), n = x.size(1), C = x.size(2);
  TORCH_CHECK(out.size(0) == m && out.size(1) == C && out.size(2) == n, "bad out shape");
  auto run = [&](auto* src) {
    transform_impl(src, out.data_ptr<float>(), mean.data_ptr<float>(), inv.data_ptr<float>(), m,
                   n, C, lsm);
  };
  if (x.scalar_type() == at::kHalf) run(x.data_ptr<at::Half>());
  else if (x.scalar_type() == at::kFloat) run(x.data_ptr<float>());
  else TORCH_CHECK(false, "float16 or float32 logits expected");
}

// x: (m, n, C) half/float contiguous; mean, m2: running (C, n) float64 statistics of `count`
// earlier models, updated in place. Returns whether any value of x was NaN/inf.
bool moments(torch::Tensor x, torch::Tensor mean, torch::Tensor m2, int64_t count, bool lsm) {
  TORCH_CHECK(x.is_contiguous() && mean.is_contiguous() && m2.is_contiguous(),
              "contiguous tensors expected");
  const int64_t m = x.size(0), n = x.size(1), C = x.size(2);
  TORCH_CHECK(mean.scalar_type() == at::kDouble && m2.scalar_type() == at::kDouble &&
              mean.size(0) == C && mean.size(1) == n, "bad statistics tensors");
  bool bad = false;
  auto run = [&](auto* src) {
    bad = moments_impl(src, mean.data_ptr<double>(), m2.data_ptr<double>(), count, m, n, C, lsm);
  };
  if (x.scalar_type() == at::kHalf) run(x.data_ptr<at::Half>());
  else if (x.scalar_type() == at::kFloat) run(x.data_ptr<float>());
  else TORCH_CHECK(false, "float16 or float32 logits expected");
  return bad;
}
"""
_FUSED_FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fopenmp"]
_fused_module: object | None | bool = None  # None: not tried yet; False: unavailable


def _fused():
    """The compiled CPU kernels (``transform``, ``moments``), or None when unavailable.

    ``MULTIRUN_KERNEL_FUSED``: ``auto`` (default: build when a compiler works, else fall
    back with a warning), ``1`` (fail if it cannot be built), ``0`` (never use it).
    """
    global _fused_module
    if _fused_module is None:
        mode = os.environ.get("MULTIRUN_KERNEL_FUSED", "auto")
        if mode == "0":
            _fused_module = False
            return None
        import hashlib
        import platform
        import sys

        from torch.utils.cpp_extension import load_inline

        cpu = ""
        with contextlib.suppress(OSError):
            cpu = next((line for line in open("/proc/cpuinfo") if line.startswith("flags")), "")
        key = "|".join([_FUSED_CPP, *_FUSED_FLAGS, torch.__version__, platform.machine(), cpu])
        name = "multirun_kernel_" + hashlib.sha1(key.encode()).hexdigest()[:12]
        try:
            print("multirun.kernel: loading fused CPU kernels (the first build on a machine "
                  "takes about a minute)", file=sys.stderr)
            _fused_module = load_inline(name, cpp_sources=[_FUSED_CPP],
                                        functions=["transform", "moments"],
                                        extra_cflags=_FUSED_FLAGS, extra_ldflags=["-fopenmp"])
        except Exception as err:  # no compiler, no ninja, unsupported flags...
            if mode == "1":
                raise
            warnings.warn(f"fused CPU kernels unavailable ({type(err).__name__}: {err}); the "
                          "kernel runs as plain torch ops (several times slower on CPU)",
                          stacklevel=2)
            _fused_module = False
    return _fused_module or None


def _raise_nonfinite(logits: ShardedLogits, idx: np.ndarray) -> None:
    """Find the first model of chunk ``idx`` with NaN/inf and raise naming its shard file."""
    for model in idx:
        if not np.isfinite(logits.models(np.array([model]))).all():
            path, local = logits.shard_of(int(model))
            raise ContractError(f"{path}: model {local} holds NaN or inf logits; the run that "
                                "produced it diverged: drop or retrain that shard, then rerun")
    raise AssertionError("non-finite chunk without a non-finite model")


def _read(logits: ShardedLogits, idx: np.ndarray, rows: slice | None, device: torch.device
          ) -> Tensor:
    """Models ``idx`` (examples ``rows``) as a (m, n, C) tensor in the shards' dtype."""
    return torch.from_numpy(logits.models(idx, rows)).to(device)


def _moments(logits: ShardedLogits, chunks: list[np.ndarray], device: torch.device,
             log_softmax: bool, fused, bar) -> tuple[Tensor, Tensor]:
    """First pass: per-(class, example) mean and 1/std (unbiased; 0 where std == 0).

    Chunk statistics merged across chunks in float64 (Chan et al.), so the result
    does not drift with the number of models. Returns two float32 (C, N) tensors.
    NaN/inf anywhere -> ContractError naming the shard file.
    """
    count = 0
    mean = torch.zeros(logits.num_classes, logits.num_examples, dtype=torch.float64, device=device)
    m2 = torch.zeros_like(mean)
    for idx in chunks:
        x = _read(logits, idx, None, device)
        n = len(idx)
        if fused is not None:  # merges into mean, m2 in place
            if fused.moments(x, mean, m2, count, log_softmax):
                _raise_nonfinite(logits, idx)
        else:
            x = x.float()
            x = (torch.log_softmax(x, -1) if log_softmax else x).permute(0, 2, 1)
            cmean = x.mean(0)
            cm2 = (x - cmean).square_().sum(0)
            if not (bool(torch.isfinite(cmean).all()) and bool(torch.isfinite(cm2).all())):
                _raise_nonfinite(logits, idx)
            delta = cmean.double() - mean
            mean += delta * (n / (count + n))
            m2 += cm2.double() + delta.square() * (count * n / (count + n))
        count += n
        bar.update(1)
    if device.type == "cpu":  # numpy: no thread-pool wake-ups for these small arrays
        mean_np, m2_np = mean.numpy(), m2.numpy()
        std = np.sqrt(np.maximum(m2_np, 0) / (count - 1))
        with np.errstate(divide="ignore"):
            inv = np.where((std > STD_FLOOR * np.abs(mean_np)) & (std > 0), 1.0 / std, 0.0)
        return torch.from_numpy(mean_np.astype(np.float32)), torch.from_numpy(inv.astype(np.float32))
    std = (m2.clamp_min(0) / (count - 1)).sqrt()
    return mean.float(), _inverse_std(std, mean).float()


def _normalised(logits: ShardedLogits, idx: np.ndarray, rows: slice, stats: tuple[Tensor, Tensor],
                cls: list[int], device: torch.device, log_softmax: bool, dtype: torch.dtype,
                fused, buffers: dict) -> Tensor:
    """One chunk normalised in the GEMM layout: (m * len(cls), n_rows) in ``dtype``.

    Row ``model * len(cls) + k`` holds class ``cls[k]`` of that model, so a query block
    times a key chunk is ``Zq.T @ Zk`` over the stacked (model, class) dimension.
    """
    x = _read(logits, idx, rows, device)
    mean, inv = stats[0][:, rows], stats[1][:, rows]
    m, n, c = x.shape
    if fused is not None:
        z = buffers.get((m, c, n))
        if z is None:
            z = buffers[(m, c, n)] = torch.empty(m, c, n)
        fused.transform(x, mean.contiguous(), inv.contiguous(), z, log_softmax)
    else:
        x = x.float()
        z = (torch.log_softmax(x, -1) if log_softmax else x).permute(0, 2, 1)
        z = (z - mean) * inv
    if len(cls) != c:
        z = z[:, cls]
    return z.reshape(m * len(cls), n).to(dtype)


@contextlib.contextmanager
def _matmul_precision(device: torch.device, precision: str) -> Iterator[None]:
    """Set CUDA's TF32 switch for fp32/tf32 GEMMs and restore it afterwards."""
    if device.type != "cuda":
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit="chunk", leave=False)


def _kernel_blocks(queries: ShardedLogits, keys: ShardedLogits, *, models, log_softmax: bool,
                   classes, chunk_models: int, block: int, device: str, precision: str,
                   progress: bool) -> Iterator[tuple[int, int, Tensor]]:
    """Yield (start, stop, K[start:stop]) with K the (Nq, Nt) float32 kernel, one query block
    at a time (the block lives on the compute device)."""
    if queries.num_models != keys.num_models or queries.num_classes != keys.num_classes:
        raise ContractError(f"queries {queries!r} and keys {keys!r} must come from the same models "
                            "(same model count and classes)")
    if precision not in PRECISIONS:
        raise ContractError(f"kernel.precision: {precision!r} is not one of {PRECISIONS}")
    if block < 1:
        raise ContractError(f"kernel.block must be >= 1, got {block}")
    dev = pick_device(device)
    if precision == "tf32" and dev.type != "cuda":
        warnings.warn("precision 'tf32' is a CUDA tensor-core mode; on CPU the GEMM runs in fp32",
                      stacklevel=3)
    sel = _model_selection(models, queries.num_models)
    cls = _class_index(classes, queries.num_classes)
    chunks = _chunks(sel, chunk_models)
    same = queries is keys or queries.paths == keys.paths
    fused = _fused() if dev.type == "cpu" else None
    nq, nt = queries.num_examples, keys.num_examples
    nblocks = math.ceil(nq / block)
    gemm_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    alpha = 1.0 / (len(sel) * len(cls))
    bar = _progress(len(chunks) * ((1 if same else 2) + nblocks), progress, "kernel")
    kbuf: dict = {}
    qbuf: dict = {}
    with bar, torch.no_grad(), _matmul_precision(dev, precision):
        stats_k = _moments(keys, chunks, dev, log_softmax, fused, bar)
        stats_q = stats_k if same else _moments(queries, chunks, dev, log_softmax, fused, bar)
        for start in range(0, nq, block):
            stop = min(start + block, nq)
            acc = torch.empty(stop - start, nt, dtype=torch.float32, device=dev)
            for j, idx in enumerate(chunks):
                beta = 0.0 if j == 0 else 1.0  # the first product overwrites (acc is uninitialised)
                zk = _normalised(keys, idx, slice(None), stats_k, cls, dev, log_softmax,
                                 gemm_dtype, fused, kbuf)
                if same:
                    zq = zk[:, start:stop]
                else:
                    zq = _normalised(queries, idx, slice(start, stop), stats_q, cls, dev,
                                     log_softmax, gemm_dtype, fused, qbuf)
                if gemm_dtype == torch.float32:
                    acc.addmm_(zq.T, zk, beta=beta, alpha=alpha)
                else:
                    if dev.type == "cuda":  # bf16 inputs, fp32 accumulation and output
                        prod = torch.mm(zq.T, zk, out_dtype=torch.float32)
                    else:  # CPU bf16 GEMM accumulates in fp32 but rounds its output to bf16
                        prod = torch.mm(zq.T, zk).float()
                    if j == 0:
                        torch.mul(prod, alpha, out=acc)
                    else:
                        acc.add_(prod, alpha=alpha)
                bar.update(1)
            yield start, stop, acc


def neighbours(queries: ShardedLogits, keys: ShardedLogits, *, k: int,
               models: np.ndarray | None = None, log_softmax: bool = True,
               exclude_self: bool = False, chunk_models: int = 64, block: int = 4096,
               device: str = "auto", precision: str = "fp32", progress: bool = True,
               classes: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k keys (train examples) of every query by ensemble-kernel similarity.

    Returns ``index`` (Nq, k) int32 and ``similarity`` (Nq, k) float32, sorted
    descending. ``models``: model indices to use (None = all). ``exclude_self``:
    queries and keys are the same examples (train-to-train near-duplicate search);
    query i never lists key i. ``classes``: per-class kernel(s) (None = all classes).
    ``precision``: fp32 | tf32 (CUDA only; fp32 elsewhere) | bf16 (GEMM inputs in
    bfloat16, fp32 accumulation). NaN/inf in a shard -> :class:`ContractError` naming it.
    """
    limit = keys.num_examples - (1 if exclude_self else 0)
    if not 1 <= k <= limit:
        raise ContractError(f"kernel.k_max: k={k} must lie in [1, {limit}] "
                            f"({keys.num_examples} keys{', minus self' if exclude_self else ''})")
    if exclude_self and queries.num_examples != keys.num_examples:
        raise ContractError("exclude_self needs queries and keys to be the same examples, got "
                            f"{queries.num_examples} and {keys.num_examples}")
    nq = queries.num_examples
    index = np.empty((nq, k), dtype=np.int32)
    similarity = np.empty((nq, k), dtype=np.float32)
    for start, stop, acc in _kernel_blocks(
            queries, keys, models=models, log_softmax=log_softmax, classes=classes,
            chunk_models=chunk_models, block=block, device=device, precision=precision,
            progress=progress):
        if exclude_self:
            acc.diagonal(offset=start).fill_(-math.inf)
        top = torch.topk(acc, k, dim=1, largest=True, sorted=True)
        index[start:stop] = top.indices.cpu().numpy()
        similarity[start:stop] = top.values.cpu().numpy()
    return index, similarity


def dense_kernel(queries: ShardedLogits, keys: ShardedLogits, *, models: np.ndarray | None = None,
                 log_softmax: bool = True, chunk_models: int = 64, device: str = "auto",
                 precision: str = "fp32", block: int = 4096, progress: bool = False,
                 classes: Sequence[int] | None = None) -> np.ndarray:
    """The whole (Nq, Nt) float32 kernel (only on request: it is Nq * Nt * 4 bytes)."""
    out = np.empty((queries.num_examples, keys.num_examples), dtype=np.float32)
    for start, stop, acc in _kernel_blocks(
            queries, keys, models=models, log_softmax=log_softmax, classes=classes,
            chunk_models=chunk_models, block=block, device=device, precision=precision,
            progress=progress):
        out[start:stop] = acc.cpu().numpy()
    return out


def cosine_neighbours(query_features: np.ndarray, key_features: np.ndarray, *, k: int,
                      block: int = 4096, device: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Top-k keys by cosine similarity of features (the penultimate-feature baseline).

    (Nq, D), (Nt, D) any float dtype -> index (Nq, k) int32, similarity (Nq, k) float32,
    sorted descending. All-zero feature rows have similarity 0 to everything.
    """
    if query_features.ndim != 2 or key_features.ndim != 2 \
            or query_features.shape[1] != key_features.shape[1]:
        raise ContractError(f"cosine_neighbours: features {query_features.shape} and "
                            f"{key_features.shape} must be (N, D) with the same D")
    if not 1 <= k <= len(key_features):
        raise ContractError(f"k={k} must lie in [1, {len(key_features)}]")
    dev = pick_device(device)

    def unit(x: np.ndarray) -> Tensor:
        t = torch.from_numpy(np.array(x, dtype=np.float32)).to(dev)
        if not bool(torch.isfinite(t).all()):
            raise ContractError("cosine_neighbours: features hold NaN or inf")
        return t / t.norm(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)

    keys = unit(key_features)
    nq = len(query_features)
    index = np.empty((nq, k), dtype=np.int32)
    similarity = np.empty((nq, k), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, nq, block):
            stop = min(start + block, nq)
            top = torch.topk(unit(query_features[start:stop]) @ keys.T, k, dim=1)
            index[start:stop] = top.indices.cpu().numpy()
            similarity[start:stop] = top.values.cpu().numpy()
    return index, similarity


# --------------------------------------------------------------------------- files


def save_neighbours(path: str | os.PathLike, index: np.ndarray, similarity: np.ndarray,
                    **extra: np.ndarray) -> None:
    """Write the neighbour contract: ``index`` (..., Nq, k) int32, ``similarity`` float32.

    The workflow stacks one (Nq, k) pair per model subset: (subsets, Nq, k), with ``models``
    (subsets, max size) int64 (-1 padded) and ``sizes`` (subsets,) as ``extra`` arrays.
    """
    save_npz(path, index=np.asarray(index, dtype=np.int32),
             similarity=np.asarray(similarity, dtype=np.float32), **extra)


def load_neighbours(path: str | os.PathLike, num_keys: int | None = None,
                    extra: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Read and check a neighbour file written by :func:`save_neighbours`: all its arrays.

    ``extra``: further arrays that must be present (the workflow's ``models``, ``sizes``).
    """
    from multirun.io import load_npz

    data = load_npz(path, ("index", "similarity", *extra))
    index, similarity = data["index"], data["similarity"]
    if index.ndim < 2 or index.shape != similarity.shape or index.dtype != np.int32 \
            or similarity.dtype != np.float32:
        raise ContractError(f"{path}: expected index (..., Nq, k) int32 and similarity "
                            f"float32, got {index.shape} {index.dtype} and {similarity.shape} "
                            f"{similarity.dtype}; rerun the kernel stage")
    if not np.isfinite(similarity).all():
        raise ContractError(f"{path}: similarity holds NaN or inf; rerun the kernel stage")
    if num_keys is not None and index.size and (index.min() < 0 or index.max() >= num_keys):
        raise ContractError(f"{path}: neighbour indices outside [0, {num_keys}); the kernel was "
                            "computed on another dataset: rerun the kernel stage")
    return data
