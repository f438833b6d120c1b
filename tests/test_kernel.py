"""The ensemble kernel against the write-up's reference code, written plainly here."""

from __future__ import annotations

import decimal
import functools
import json

import numpy as np
import pytest
import torch

import multirun.kernel as kernel_module
from multirun.contracts import ContractError
from multirun.kernel import (
    STD_FLOOR,
    ShardedLogits,
    cosine_neighbours,
    dense_kernel,
    ensemble_kernel,
    load_neighbours,
    neighbours,
    normalize,
    save_neighbours,
)

torch.set_num_threads(1)


def reference_normalize(logits, log_softmax=True):
    logits = logits.float()
    if log_softmax:
        logits = logits.log_softmax(-1)
    return (logits - logits.mean(0, keepdim=True)) / logits.std(0, keepdim=True)


def reference_kernel(logits1, logits2, log_softmax=True, classes=None):
    """The write-up's compute_kernel on the CPU (a loop over classes, / n models / n classes)."""
    logits1 = reference_normalize(logits1, log_softmax)
    logits2 = reference_normalize(logits2, log_softmax)
    classes = range(logits1.shape[-1]) if classes is None else classes
    kernel = torch.zeros(logits1.shape[1], logits2.shape[1])
    for c in classes:
        corr_cls = (logits1[..., c].T @ logits2[..., c]) / len(logits1)
        kernel += corr_cls / len(classes)
    return kernel


def random_logits(rng, m, n, c, scale=3.0):
    return (rng.standard_normal((m, n, c)) * scale).astype(np.float16)


def write_shards(tmp_path, name, logits, splits):
    """Split (M, N, C) along models at ``splits`` into .npy shard files."""
    paths = []
    for i, part in enumerate(np.split(logits, splits)):
        path = tmp_path / f"{name}-{i}.npy"
        np.save(path, part)
        paths.append(path)
    return paths


@pytest.fixture(params=["fused", "torch"], autouse=True)
def engine(request, monkeypatch):
    """Run every streamed test with the compiled CPU kernels and with plain torch ops."""
    if request.param == "torch":
        monkeypatch.setattr(kernel_module, "_fused_module", False)
    elif kernel_module._fused() is None:
        pytest.skip("fused CPU kernels cannot be built here (no C++ compiler)")
    return request.param


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    m, c = 23, 5
    test = random_logits(rng, m, 37, c)
    train = random_logits(rng, m, 61, c)
    return tmp_path, test, train


def test_normalize_matches_reference():
    x = torch.randn(9, 13, 4) * 4
    for ls in (True, False):
        torch.testing.assert_close(normalize(x.half(), ls), reference_normalize(x.half(), ls))


def test_in_memory_kernel_matches_reference():
    x, y = torch.randn(17, 30, 10).half(), torch.randn(17, 40, 10).half()
    for ls in (True, False):
        k = ensemble_kernel(x, y, log_softmax=ls)
        assert k.shape == (30, 40) and k.dtype == torch.float32
        torch.testing.assert_close(k, reference_kernel(x, y, ls), atol=1e-5, rtol=0)
    torch.testing.assert_close(ensemble_kernel(x, y, classes=[3]),
                               reference_kernel(x, y, classes=[3]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("chunk,block,splits", [(64, 4096, []), (5, 7, [4, 11]), (1, 1, [22]),
                                                (8, 16, [1, 2, 3])])
def test_streamed_dense_kernel_matches_reference(data, chunk, block, splits):
    tmp_path, test, train = data
    q = ShardedLogits(write_shards(tmp_path, "test", test, splits))
    t = ShardedLogits(write_shards(tmp_path, "train", train, splits))
    assert (q.num_models, q.num_examples, q.num_classes) == test.shape
    for ls in (True, False):
        got = dense_kernel(q, t, log_softmax=ls, chunk_models=chunk, block=block, device="cpu")
        want = reference_kernel(torch.from_numpy(test), torch.from_numpy(train), ls).numpy()
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_neighbours_are_topk_of_reference(data):
    tmp_path, test, train = data
    q = ShardedLogits(write_shards(tmp_path, "test", test, [10]))
    t = ShardedLogits(write_shards(tmp_path, "train", train, [3]))
    sel = np.array([0, 2, 3, 7, 11, 12, 19, 22])
    index, sim = neighbours(q, t, k=6, models=sel, chunk_models=3, block=10, progress=False)
    assert index.dtype == np.int32 and sim.dtype == np.float32 and index.shape == (37, 6)
    want = reference_kernel(torch.from_numpy(test[sel]), torch.from_numpy(train[sel])).numpy()
    np.testing.assert_allclose(sim, np.sort(want, 1)[:, ::-1][:, :6], atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(want, index.astype(np.int64), 1), sim, atol=1e-5)
    assert (np.diff(sim, axis=1) <= 0).all()


def test_per_class_kernel(data):
    tmp_path, test, train = data
    q = ShardedLogits(write_shards(tmp_path, "test", test, [5]))
    t = ShardedLogits(write_shards(tmp_path, "train", train, [5]))
    for cls in ([2], [0, 4]):
        got = dense_kernel(q, t, classes=cls, chunk_models=4, block=9)
        want = reference_kernel(torch.from_numpy(test), torch.from_numpy(train), classes=cls)
        np.testing.assert_allclose(got, want.numpy(), atol=1e-5, rtol=0)


def test_train_to_train_excludes_self(data):
    tmp_path, _, train = data
    paths = write_shards(tmp_path, "train", train, [12])
    t = ShardedLogits(paths)
    index, sim = neighbours(t, ShardedLogits(paths), k=4, exclude_self=True, chunk_models=6,
                            block=13, progress=False)
    assert not (index == np.arange(61)[:, None]).any()
    want = reference_kernel(torch.from_numpy(train), torch.from_numpy(train)).numpy()
    np.fill_diagonal(want, -np.inf)
    np.testing.assert_allclose(sim, np.sort(want, 1)[:, ::-1][:, :4], atol=1e-5)
    # a planted near-duplicate is found as each other's nearest neighbour
    dup = train.copy()
    dup[:, 5] = dup[:, 40] + np.float16(0.01)
    d = ShardedLogits(write_shards(tmp_path, "dup", dup, [7]))
    index, _ = neighbours(d, d, k=1, exclude_self=True, progress=False)
    assert index[5, 0] == 40 and index[40, 0] == 5


def test_bf16_precision_is_close(data, device):
    tmp_path, test, train = data
    q = ShardedLogits(write_shards(tmp_path, "test", test, []))
    t = ShardedLogits(write_shards(tmp_path, "train", train, []))
    exact = dense_kernel(q, t, device=device)
    np.testing.assert_allclose(exact, reference_kernel64(test, train), atol=1e-5, rtol=0)
    fast = dense_kernel(q, t, precision="bf16", device=device)
    assert 0 < np.abs(fast - exact).max() < 2e-2
    if device == "cuda":  # tensor cores: inputs rounded to 10 mantissa bits
        assert np.abs(dense_kernel(q, t, precision="tf32", device=device) - exact).max() < 1e-3
    else:
        with pytest.warns(UserWarning, match="tf32"):
            np.testing.assert_array_equal(dense_kernel(q, t, precision="tf32", device=device),
                                          exact)
    with pytest.raises(ContractError, match="precision"):
        dense_kernel(q, t, precision="fp8")


def test_constant_column_gives_zero_not_nan(tmp_path):
    rng = np.random.default_rng(1)
    x = random_logits(rng, 6, 8, 3)
    x[:, 2] = x[0, 2]  # example 2 identical in every model: std 0
    s = ShardedLogits(write_shards(tmp_path, "c", x, [3]))
    k = dense_kernel(s, s)
    assert np.isfinite(k).all() and (k[2] == 0).all()


def test_chunk_views_are_the_mapped_file_and_copies_elsewhere(tmp_path):
    rng = np.random.default_rng(4)
    x = random_logits(rng, 7, 5, 3)
    s = ShardedLogits(write_shards(tmp_path, "v", x, [4]))
    run = s.models(np.arange(1, 4), view=True)  # consecutive models of shard 0: no copy
    assert isinstance(run, np.memmap) and not run.flags.writeable
    np.testing.assert_array_equal(run, x[1:4])
    assert s.bytes_read == run.nbytes
    for idx, rows in ((np.arange(3, 6), None), (np.array([0, 2]), None),
                      (np.arange(2), slice(1, 3))):  # across shards, gaps, a row block
        got = s.models(idx, rows, view=True)
        assert not isinstance(got, np.memmap) and got.flags.writeable
        np.testing.assert_array_equal(got, x[idx][:, rows or slice(None)])
    s.release()  # the pages go; the view still reads the file
    np.testing.assert_array_equal(run, x[1:4])


def test_cosine_neighbours():
    rng = np.random.default_rng(2)
    qf, kf = rng.standard_normal((20, 7)), rng.standard_normal((50, 7)).astype(np.float16)
    index, sim = cosine_neighbours(qf, kf, k=3, block=6)
    kf32 = kf.astype(np.float64)
    cos = (qf / np.linalg.norm(qf, axis=1, keepdims=True)) @ \
        (kf32 / np.linalg.norm(kf32, axis=1, keepdims=True)).T
    np.testing.assert_allclose(sim, np.sort(cos, 1)[:, ::-1][:, :3], atol=1e-5)
    assert index.dtype == np.int32 and (index[:, 0] == cos.argmax(1)).all()


def test_neighbour_file_roundtrip(tmp_path):
    index, sim = np.array([[1, 0]], dtype=np.int32), np.array([[0.9, 0.5]], dtype=np.float32)
    save_neighbours(tmp_path / "n.npz", index, sim)
    got = load_neighbours(tmp_path / "n.npz", num_keys=2)
    np.testing.assert_array_equal(got["index"], index)
    with pytest.raises(ContractError, match="n.npz"):
        load_neighbours(tmp_path / "n.npz", num_keys=1)


# --------------------------------------------------------------------------- bad input


def test_mismatched_shards_name_the_shard(tmp_path):
    rng = np.random.default_rng(3)
    good = tmp_path / "a.npy"
    np.save(good, random_logits(rng, 3, 10, 4))
    for name, arr, what in [
        ("examples.npy", random_logits(rng, 3, 11, 4), "examples"),
        ("classes.npy", random_logits(rng, 3, 10, 5), "classes"),
        ("dtype.npy", random_logits(rng, 3, 10, 4).astype(np.float32), "dtype"),
    ]:
        np.save(tmp_path / name, arr)
        with pytest.raises(ContractError, match=f"{name}.*{what}"):
            ShardedLogits([good, tmp_path / name])
    np.save(tmp_path / "int.npy", np.zeros((3, 10, 4), dtype=np.int64))
    with pytest.raises(ContractError, match="int.npy"):
        ShardedLogits([tmp_path / "int.npy"])
    np.save(tmp_path / "one.npy", random_logits(rng, 1, 10, 4))
    with pytest.raises(ContractError, match="one.npy.*at least 2"):
        ShardedLogits([tmp_path / "one.npy"])
    with pytest.raises(ContractError, match="missing.npy"):
        ShardedLogits([tmp_path / "missing.npy"])


# Each model's slab is 10 x 4 = 40 values: (7, 1) is value 29, inside the fused conversion's
# 16-wide AVX-512 loop, (9, 3) value 39, in its scalar tail.
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("where", [(7, 1), (9, 3)])
def test_non_finite_shard_is_named_while_streaming(tmp_path, bad, dtype, where):
    rng = np.random.default_rng(4)
    train = random_logits(rng, 6, 10, 4).astype(dtype)
    test = random_logits(rng, 6, 5, 4).astype(dtype)
    train[(4, *where)] = bad
    t = ShardedLogits(write_shards(tmp_path, "train", train, [3]))
    q = ShardedLogits(write_shards(tmp_path, "test", test, [3]))
    with pytest.raises(ContractError, match="train-1.npy: model 1 "):
        neighbours(q, t, k=2, chunk_models=2, progress=False)


def test_bad_model_selection_and_k(data):
    tmp_path, test, train = data
    q = ShardedLogits(write_shards(tmp_path, "test", test, []))
    t = ShardedLogits(write_shards(tmp_path, "train", train, []))
    with pytest.raises(ContractError, match="kernel.model_counts"):
        neighbours(q, t, k=2, models=np.array([3]), progress=False)
    with pytest.raises(ContractError, match="kernel.model_counts"):
        neighbours(q, t, k=2, models=np.arange(24), progress=False)
    with pytest.raises(ContractError, match="k_max"):
        neighbours(q, t, k=62, progress=False)
    with pytest.raises(ContractError, match="exclude_self"):
        neighbours(q, t, k=2, exclude_self=True, progress=False)
    other = ShardedLogits(write_shards(tmp_path, "other", train[:20], []))
    # the pair of files of other models named, with the command that remakes both
    with pytest.raises(ContractError, match=r"test-0\.npy holds 23 models of \d+ classes, "
                                            r".*other-0\.npy 20 of \d+: the query and key "
                                            r"logits of a shard must come from the same models; "
                                            r"remake both with: .*--forcerun"):
        neighbours(q, other, k=2, progress=False)


# --------------------------------------------------------------------------- every logit scale


def exact_log_softmax64(x):
    """log_softmax in float64 with the top class as -log1p(sum of the other exp(x - max)).

    torch's float64 log_softmax rounds 1 + s to 1 once s < 1e-16 (a top-two gap of 37):
    confident logits need the log1p form for a reference that is exact.
    """
    d = x - x.max(-1, keepdims=True)
    e = np.exp(d)
    np.put_along_axis(e, d.argmax(-1)[..., None], 0.0, -1)
    return d - np.log1p(e.sum(-1, keepdims=True))


def reference_kernel64(logits1, logits2, log_softmax=True):
    """The formula in float64: log_softmax, unbiased std across models, sum over c / M / C."""
    def z(x):
        x = x.astype(np.float64)
        x = exact_log_softmax64(x) if log_softmax else x
        return (x - x.mean(0)) / x.std(0, ddof=1)

    m, _, c = logits1.shape
    z1, z2 = z(logits1), z(logits2)
    return sum(z1[..., k].T @ z2[..., k] for k in range(c)) / m / c


def decimal_log1p(s):
    """log(1 + s) for a decimal s >= 0 that keeps s's relative precision however small s is
    (ln(1 + s) would round 1 + s to 1 below 1e-34); three series terms below 1e-12."""
    return s - s * s / 2 + s * s * s / 3 if s < decimal.Decimal("1e-12") else (1 + s).ln()


def decimal_z_scores(logits, log_softmax=True):
    """(M, N, C) logits -> (M, N, C) float64 z-scores computed in 34-digit decimal arithmetic
    from the float32-rounded logits: log_softmax, mean and unbiased std across models, no
    rounding to speak of and no underflow (exp(-745) and its square included); 0 where the
    std is at most ``STD_FLOOR`` times |mean| (the engine's convention: values equal up to
    float64 rounding, e.g. the same gap to the top class in both of 2 models, whose
    log-probabilities then differ by ~1e-16 of their size)."""
    D = decimal.Decimal
    x = logits.astype(np.float32)
    m, n, c = x.shape
    z = np.empty((m, n, c))
    with decimal.localcontext(decimal.Context(prec=34, Emin=-10**6, Emax=10**6)):
        v = [[[D(float(a)) for a in row] for row in model] for model in x]
        if log_softmax:
            for model in v:
                for row in model:
                    top = max(range(c), key=row.__getitem__)
                    d = [a - row[top] for a in row]
                    lg = decimal_log1p(sum(d[k].exp() for k in range(c) if k != top))
                    row[:] = [a - lg for a in d]
        for i in range(n):
            for k in range(c):
                col = [v[mi][i][k] for mi in range(m)]
                mean = sum(col) / m
                std = (sum((a - mean) ** 2 for a in col) / (m - 1)).sqrt()
                flat = std <= D(STD_FLOOR) * abs(mean)
                z[:, i, k] = [0.0 if flat else float((a - mean) / std) for a in col]
    return z


def reference_kernel_decimal(logits1, logits2, log_softmax=True):
    """The formula with its z-scores from :func:`decimal_z_scores` (the products, of numbers
    of size ~1, in float64)."""
    m, _, c = logits1.shape
    z1, z2 = decimal_z_scores(logits1, log_softmax), decimal_z_scores(logits2, log_softmax)
    return sum(z1[..., k].T @ z2[..., k] for k in range(c)) / m / c


def scaled_logits(rng, kind, m, n, c, scale):
    """fp16 logits: ``random`` (independent per model, std ``scale``), ``confident`` (a class
    profile in [0, 1] shared by every model, times ``scale``, plus 5% noise: the same class on
    top in every model, by up to ``scale``) or ``shared`` (a N(0, 1) profile, every other
    example's top class raised by 2, times ``scale``, plus 10% noise: at scale 60 those top
    classes lead by more than 87 logits in every model, where exp(-lead) underflows float32;
    at scale 30 by more than 69 in many)."""
    if kind == "random":
        return random_logits(rng, m, n, c, scale)
    if kind == "shared":
        profile = rng.standard_normal((n, c))
        profile[np.arange(0, n, 2), profile[::2].argmax(1)] += 2
        return (scale * (profile + 0.1 * rng.standard_normal((m, n, c)))).astype(np.float16)
    profile = rng.uniform(0, 1, (n, c))
    return (scale * (profile + 0.05 * rng.standard_normal((m, n, c)))).astype(np.float16)


@pytest.mark.parametrize(("kind", "models"), [("random", 37), ("confident", 37), ("shared", 37),
                                              ("shared", 3)])
@pytest.mark.parametrize("c", [10, 100])
@pytest.mark.parametrize("scale", [3, 12, 30, 60])
def test_engine_exact_at_every_logit_scale(tmp_path, kind, models, c, scale, device):
    """Within 1e-5 of the float64 formula: 37 models in shards of 5, 20, 12 (or 3 models in
    shards of 1, 2), every chunking, on every device present."""
    rng = np.random.default_rng([scale, c, kind == "random", models])
    test = scaled_logits(rng, kind, models, 29, c, scale)
    train = scaled_logits(rng, kind, models, 83, c, scale)
    splits = [5, 25] if models > 25 else [1]
    q = ShardedLogits(write_shards(tmp_path, "test", test, splits))
    t = ShardedLogits(write_shards(tmp_path, "train", train, splits))
    if kind == "shared" and scale == 60:  # the case this covers: leads beyond float32's exp
        for x in (test, train):
            top2 = np.sort(x.astype(np.float64), -1)[..., -2:]
            assert ((top2[..., 1] - top2[..., 0]).min(0) > 87).any()  # in every model
    chunkings = ((64, None), (7, 10), (20, 29)) if models > 20 else ((64, None), (2, 10), (1, 29))
    for ls in (True, False):
        want = reference_kernel64(test, train, ls)
        assert np.isfinite(want).all()
        for chunk, block in chunkings:
            got = dense_kernel(q, t, log_softmax=ls, chunk_models=chunk, block=block,
                               device=device, progress=False)
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=0,
                                       err_msg=f"log_softmax={ls} chunk={chunk} block={block}")
    if kind == "random":  # here torch's own float64 log_softmax is exact too
        z = torch.from_numpy(test.astype(np.float64)).log_softmax(-1).numpy()
        np.testing.assert_allclose(z, exact_log_softmax64(test.astype(np.float64)), atol=1e-12)


def assert_every_path_matches(tmp_path, x, want, chunks, atol):
    """The streamed kernel of ``x`` with itself (shards split after model 2, every chunk size
    in ``chunks``) and the in-memory one, each within ``atol`` of ``want``."""
    s = ShardedLogits(write_shards(tmp_path, "x", x, [2]))
    for chunk in chunks:
        got = dense_kernel(s, s, chunk_models=chunk, device="cpu", progress=False)
        np.testing.assert_allclose(got, want, atol=atol, rtol=0, err_msg=f"chunk={chunk}")
    np.testing.assert_allclose(ensemble_kernel(torch.from_numpy(x), torch.from_numpy(x)), want,
                               atol=atol, rtol=0)


def test_top_class_far_beyond_float32_range(tmp_path):
    """A top class that leads by 100 to 650 logits in every model (exp(-lead) from 4e-44 down
    to 1e-282: below float32's range, inside float64's) keeps its z-score across models."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((6, 9, 4)) * 3
    x[:, :, 0] += rng.uniform(100, 650, (6, 9))
    x = x.astype(np.float16)
    want = reference_kernel64(x, x)
    # every (example, class) a z-score of norm^2 M - 1 (none set to 0): K[i, i] = (M - 1) / M
    np.testing.assert_allclose(np.diag(want), 5 / 6, rtol=1e-12)
    assert_every_path_matches(tmp_path, x, want, (6, 4, 1), atol=1e-5)


def test_decimal_reference_is_the_float64_formula_where_that_is_exact():
    rng = np.random.default_rng(11)
    x, y = random_logits(rng, 5, 6, 4, 12), random_logits(rng, 5, 7, 4, 12)
    for ls in (True, False):
        np.testing.assert_allclose(reference_kernel_decimal(x, y, ls), reference_kernel64(x, y, ls),
                                   atol=1e-13, rtol=0)


@functools.cache
def two_model_case(kind, c, scale):
    """Logits of 2 models (17 test, 41 train examples) and their kernels in decimal arithmetic
    (log_softmax, raw), computed once for both engine paths."""
    rng = np.random.default_rng([scale, c, 2, len(kind)])
    test = scaled_logits(rng, kind, 2, 17, c, scale)
    train = scaled_logits(rng, kind, 2, 41, c, scale)
    return test, train, {ls: reference_kernel_decimal(test, train, ls) for ls in (True, False)}


@pytest.mark.parametrize("kind", ["random", "confident", "shared"])
@pytest.mark.parametrize("c", [10, 100])
@pytest.mark.parametrize("scale", [3, 12, 30, 60])
def test_two_models_match_high_precision(tmp_path, kind, c, scale, device):
    """The smallest subset, 2 models: each z-score is +-1/sqrt(2) however little the two
    models differ, so float32 cancellation in value - mean shows at once (it did: 3e-5 in the
    fused loops). Every path within 1e-6 of the decimal formula, in one chunk or one model
    per chunk."""
    test, train, want = two_model_case(kind, c, scale)
    q = ShardedLogits(write_shards(tmp_path, "test", test, [1]))
    t = ShardedLogits(write_shards(tmp_path, "train", train, [1]))
    for ls in (True, False):
        for chunk, block in ((64, None), (1, 10)):
            got = dense_kernel(q, t, log_softmax=ls, chunk_models=chunk, block=block,
                               device=device, progress=False)
            np.testing.assert_allclose(got, want[ls], atol=1e-6, rtol=0,
                                       err_msg=f"log_softmax={ls} chunk={chunk}")
        memory = ensemble_kernel(torch.from_numpy(test), torch.from_numpy(train), log_softmax=ls)
        np.testing.assert_allclose(memory, want[ls], atol=1e-6, rtol=0)


def test_top_class_beyond_the_squared_deviation_underflow(tmp_path):
    """The same class leads by 300 to 704 logits in every model: its log-probabilities
    -log1p(exp(-lead)) differ across models by ~1e-130 to ~1e-306, whose squares underflow
    float64 (below 1e-308 from a lead of ~355 on) unless scaled first. Also a column tiny in
    models 0-3 only (class 0 trails in models 4 and 5) and one whose first models are not
    tiny, in every chunking: each path within 1e-6 of the decimal formula."""
    rng = np.random.default_rng(12)
    m, n = 6, 12
    x = rng.standard_normal((m, n, 4)) * 3
    lead = np.linspace(300, 702, n)[None, :] + rng.uniform(0, 2, (m, n))
    x[:, :, 0] = x[:, :, 1:].max(-1) + lead
    x[4:, 3, 0] -= 30  # class 0 leads by only ~10 in models 4, 5
    x[:2, 5, 0] = x[:2, 5, 1:].max(-1) - 1  # class 0 trails in models 0, 1
    x = x.astype(np.float32)
    want = reference_kernel_decimal(x, x)
    # no column set to 0: every (example, class) a z-score of norm^2 M - 1, K[i, i] = 5 / 6
    np.testing.assert_allclose(np.diag(want), 5 / 6, rtol=1e-12)
    with np.errstate(invalid="ignore", divide="ignore"):
        k64 = reference_kernel64(x, x)
    assert np.abs(k64[:2, :2] - want[:2, :2]).max() < 1e-6  # float64 itself: fine at 300, 336
    assert not (np.abs(k64[-3:, -3:] - want[-3:, -3:]) < 1e-2).any()  # ... lost beyond ~355
    assert_every_path_matches(tmp_path, x, want, (6, 4, 1), atol=1e-6)


def test_same_gap_in_every_model_keeps_its_z_score(tmp_path):
    """Class 1 trails the top class by exactly 10 in every model; its log-probabilities differ
    across models only through log1p(s) (by ~1e-6 of |log p|, a few float32 ulps): the
    z-score of that column is still the float64 formula's."""
    rng = np.random.default_rng(8)
    x = np.zeros((5, 7, 3))
    x[:, :, 0] = 10
    x[:, :, 2] = rng.uniform(-6, -2, (5, 7))
    x = x.astype(np.float16)
    want = reference_kernel64(x, x)
    np.testing.assert_allclose(np.diag(want), 4 / 5, rtol=1e-9)  # no column set to 0
    assert_every_path_matches(tmp_path, x, want, (5, 2), atol=1e-5)


def test_confident_top_class_keeps_its_precision():
    """log p of the top class is -log1p(s), not log(1 + s) rounded to 1 in float32."""
    x = torch.tensor([[30.0, 0.0, -5.0]])
    s = np.exp(-30.0) + np.exp(-35.0)
    got = kernel_module.log_probabilities(x)
    assert got[0, 0].item() != 0.0
    np.testing.assert_allclose(got[0, 0].item(), -np.log1p(s), rtol=1e-6)
    np.testing.assert_allclose(got[0, 1:].numpy(), [-30 - np.log1p(s), -35 - np.log1p(s)],
                               rtol=1e-7)


def test_subsets_together_equal_one_at_a_time(data):
    """subset_neighbours shares reads between subsets; each equals its own neighbours()."""
    tmp_path, test, train = data
    q = ShardedLogits(write_shards(tmp_path, "test", test, [10]))
    t = ShardedLogits(write_shards(tmp_path, "train", train, [3]))
    subsets = [np.array([0, 2, 3, 7]), np.array([2, 3, 7, 11, 19]), None]
    index, sim = kernel_module.subset_neighbours(q, t, subsets, k=5, chunk_models=3,
                                                 progress=False)
    assert index.shape == (3, 37, 5)
    for s, sel in enumerate(subsets):
        want = reference_kernel(torch.from_numpy(test if sel is None else test[sel]),
                                torch.from_numpy(train if sel is None else train[sel])).numpy()
        np.testing.assert_allclose(sim[s], np.sort(want, 1)[:, ::-1][:, :5], atol=1e-5)
    # a budget for one accumulator at a time: same answer, more passes
    small = kernel_module.KernelOptions(chunk_models=3, memory_gb=3 * 37 * 61 * 4 / 2**30,
                                        progress=False)
    index2, sim2 = kernel_module.subset_neighbours(q, t, subsets, k=5, options=small)
    np.testing.assert_allclose(sim2, sim, atol=1e-6)
    # blocks of 23 and 14 query rows per group, reusing the accumulators of the first
    tiny = kernel_module.KernelOptions(chunk_models=3, memory_gb=80 * 61 * 4 / 2**30,
                                       progress=False)
    index3, sim3 = kernel_module.subset_neighbours(q, t, subsets, k=5, options=tiny)
    np.testing.assert_allclose(sim3, sim, atol=1e-6)
    np.testing.assert_array_equal(index3, index)


def test_plan_reads_the_data_once_when_the_accumulators_fit():
    from multirun.kernel.engine import plan

    gib = 2**30
    assert plan(10_000, 50_000, 1, 640, 16 * gib) == (1, 10_000)  # 2 GB accumulator fits
    assert plan(10_000, 50_000, 6, 640, 16 * gib) == (6, 10_000)  # six of them too
    group, block = plan(10_000, 50_000, 1, 640, 1 * gib)  # does not fit: blocks of rows
    assert group == 1 and 1 <= block < 10_000
    assert block * 50_000 * 4 + 3 * 640 * 50_000 * 4 <= gib
    assert plan(10_000, 50_000, 3, 640, 16 * gib, block=2048) == (3, 2048)
    # the default budget stays inside a cluster job's memory request
    from multirun.kernel.engine import memory_budget

    cpu = torch.device("cpu")
    assert 0 < memory_budget(cpu, None, job_memory_gb=1.0) <= 0.75 * gib
    assert memory_budget(cpu, 2.5, job_memory_gb=1.0) == int(2.5 * gib)  # explicit wins


def test_bytes_read_are_logged(data, capsys):
    tmp_path, test, train = data
    q = ShardedLogits(write_shards(tmp_path, "test", test, [10]))
    t = ShardedLogits(write_shards(tmp_path, "train", train, [3]))
    neighbours(q, t, k=2, chunk_models=5, progress=False)
    out = capsys.readouterr().out
    assert "3 pass(es) over the data" in out and "= 2.00 x the logits used" in out
    # statistics, then products: each side read twice
    assert q.bytes_read == 2 * test.nbytes and t.bytes_read == 2 * train.nbytes
    q.bytes_read = t.bytes_read = 0
    neighbours(q, t, k=2, chunk_models=5, block=10, progress=False)  # 4 query blocks
    assert "6 pass(es)" in capsys.readouterr().out
    assert t.bytes_read == 5 * train.nbytes  # keys re-read per block
    assert q.bytes_read == 2 * test.nbytes  # each query row read once for the products


@pytest.mark.parametrize("n, k", [(10_000, 20), (37, 5), (15, 15), (16, 1), (100, 100)])
def test_topk_of_a_block_is_torch_topk_with_ties_by_column(n, k):
    """The top-k of a finished block (the fused loop on CPU, else torch.topk) against a naive
    per-row sort: values descending, equal values by column ascending; -inf (an excluded
    self) only where nothing larger is left; rows that rise to the end (every value a new
    candidate)."""
    from multirun.kernel.search import _topk

    rng = np.random.default_rng(n + k)
    acc = rng.standard_normal((7, n)).astype(np.float32)
    acc[1] = np.round(acc[1])  # many ties
    acc[2] = np.sort(acc[2])  # ascending: the worst case for a threshold scan
    acc[3, : n // 2] = -np.inf
    acc[4] = 0.5  # one value everywhere
    values, columns = (t.numpy() for t in _topk(torch.from_numpy(acc), k))
    for r in range(len(acc)):
        order = sorted(range(n), key=lambda c: (-acc[r, c], c))[:k]
        np.testing.assert_array_equal(values[r], acc[r, order])
        if r in (1, 3, 4) and kernel_module._fused() is None:
            continue  # torch.topk's order among equal values is its own
        np.testing.assert_array_equal(columns[r], order)


def test_fused_loops_are_built_at_setup_and_loaded_without_compiling(monkeypatch):
    """`make setup` builds the fused loops (python -m multirun.kernel.build); a job then
    imports the built library and never compiles."""
    import subprocess
    import sys
    import tomllib
    from pathlib import Path

    from multirun.kernel import build

    root = Path(__file__).resolve().parents[1]
    assert "python -m multirun.kernel.build" in (root / "Makefile").read_text()
    package_data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert build.SOURCE.name in package_data["package-data"]["multirun.kernel"]
    monkeypatch.setattr(build, "_fused_module", None)
    if build.fused() is None:
        pytest.skip("fused CPU kernels cannot be built here (no C++ compiler)")
    done = subprocess.run([sys.executable, "-m", "multirun.kernel.build"], capture_output=True,
                          text=True, check=True)
    assert "ready" in done.stdout and "building" not in done.stderr  # already built: loaded

    def compile_extension(name):
        raise AssertionError("a job compiled the fused loops")

    monkeypatch.setattr(build, "_fused_module", None)
    monkeypatch.setattr(build, "compile_extension", compile_extension)
    module = build.fused()
    assert module is not None and callable(module.transform) and callable(module.moments)


# ----------------------------------------------------------------------------- chunk_models: auto


def test_auto_chunk_is_measured_once_per_machine_and_cached(data, tmp_path, monkeypatch, capsys):
    from multirun.kernel import tune

    monkeypatch.setenv("MULTIRUN_CACHE", str(tmp_path / "cache"))
    cpu = torch.device("cpu")
    calls, real = [], tune.measure

    def small_measure(device, classes, queries, keys, precision, log_softmax, used):
        calls.append(classes)  # the engine itself, small
        return real(device, classes, queries, keys, precision, log_softmax, used,
                    candidates=(2, 4, 8), models=16, repeats=1)

    monkeypatch.setattr(tune, "measure", small_measure)
    chosen = tune.chunk_models(cpu, 5, 30, 50)
    assert chosen in (2, 4, 8) and calls == [5]
    assert f"chunk_models auto -> {chosen}" in capsys.readouterr().out
    entries = json.loads((tmp_path / "cache" / tune.FILE).read_text())
    entry = entries[tune.key(cpu, 5, 30, 50, "fp32", True)]
    assert "| 32 x 64 examples |" in tune.key(cpu, 5, 30, 50, "fp32", True)  # the shape bucket
    assert entry["chunk_models"] == chosen and set(entry["seconds"]) == {"2", "4", "8"}
    assert all(s > 0 for s in entry["seconds"].values())
    assert tune.chunk_models(cpu, 5, 20, 40) == chosen and calls == [5]  # same bucket: cached
    assert "AVX-512 " in tune.key(cpu, 5, 30, 50, "fp32", True).replace(")", " ")  # the CPU
    tune.chunk_models(cpu, 7, 30, 50)  # another problem: its own entry
    assert calls == [5, 7]
    tune.chunk_models(cpu, 7, 30, 50, used=1)  # one class of 7 kept (a per-class kernel)
    assert calls == [5, 7, 7] and "| 1 of 7 classes |" in tune.key(cpu, 7, 30, 50, "fp32", True, 1)
    assert tune.bucket(1000, 4000) == (1024, 4096) and tune.bucket(10_000, 50_000) == (1024, 4096)
    (tmp_path / "cache" / tune.FILE).write_text("{not json")  # a damaged cache is measured again
    assert tune.chunk_models(cpu, 5, 30, 50) in (2, 4, 8) and calls == [5, 7, 7, 5]


def test_an_unwritable_cache_warns_and_measures_for_the_job(tmp_path, monkeypatch, capsys):
    from multirun.kernel import tune

    blocker = tmp_path / "file"
    blocker.write_text("")  # MULTIRUN_CACHE below a file: the folder cannot be made
    monkeypatch.setenv("MULTIRUN_CACHE", str(blocker / "cache"))
    monkeypatch.setattr(tune, "measure", lambda *a: {32: 2.0, 64: 1.0})
    with pytest.warns(UserWarning, match=r"cannot write the measured-settings cache .*MULTIRUN_CACHE"):
        assert tune.chunk_models(torch.device("cpu"), 5, 30, 50) == 64
    assert "not stored" in capsys.readouterr().out


def test_auto_keeps_64_unless_another_chunk_is_clearly_faster():
    from multirun.kernel import tune

    assert tune.pick({32: 0.93, 64: 1.0, 128: 0.99}) == 64  # 7%: within the noise
    assert tune.pick({32: 1.2, 64: 1.0, 128: 0.9, 256: 0.93}) == 128
    assert tune.pick({2: 0.5, 4: 0.4}) == 4  # no 64 among them: the fastest


def test_auto_uses_the_cached_chunk_and_agrees_with_an_explicit_one(tmp_path, monkeypatch, capsys):
    from multirun.kernel import tune

    monkeypatch.setenv("MULTIRUN_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(3)
    test, train = random_logits(rng, 40, 13, 5), random_logits(rng, 40, 17, 5)
    q = ShardedLogits(write_shards(tmp_path, "q", test, [25]))
    t = ShardedLogits(write_shards(tmp_path, "t", train, [25]))
    cache = tmp_path / "cache" / tune.FILE
    cache.parent.mkdir()
    cache.write_text(json.dumps({tune.key(torch.device("cpu"), 5, 13, 17, "fp32", True):
                                 {"chunk_models": 16}}))
    monkeypatch.setattr(tune, "measure", lambda *a, **k: pytest.fail("measured despite the cache"))
    auto = dense_kernel(q, t, device="cpu", progress=False)
    assert "40 models in 1 group(s) and chunks of 16" in capsys.readouterr().out
    np.testing.assert_allclose(auto, dense_kernel(q, t, chunk_models=64, device="cpu",
                                                  progress=False), atol=1e-6)
    small = ShardedLogits(write_shards(tmp_path, "s", test[:30], [10]))  # <= 32 models: one chunk
    dense_kernel(small, small, device="cpu", classes=[0, 1], progress=False)
    assert "chunks of 30" in capsys.readouterr().out


@pytest.mark.parametrize("bad", [0, "big", True, 2.5])
def test_a_bad_chunk_size_names_the_key(data, bad):
    tmp_path, test, train = data
    q = ShardedLogits(write_shards(tmp_path, "q", test, [10]))
    with pytest.raises(ContractError, match=r"kernel.chunk_models must be an integer >= 1 or 'auto'"):
        dense_kernel(q, q, chunk_models=bad, progress=False)
