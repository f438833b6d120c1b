"""Hessian operator, Lanczos, SLQ and effective dimension against dense float64 references."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import scipy.sparse.linalg
import torch
import torch.nn.functional as F
from torch import nn

from multirun.contracts import ContractError
from multirun.hessian import (
    HessianOperator,
    effective_dimension,
    effective_dimension_probes,
    effective_dimension_slq,
    effective_dimensions,
    lanczos,
    lanczos_block,
    load_spectrum,
    rademacher_probes,
    slq,
    spectral_density,
    spectrum,
)

torch.set_num_threads(1)
# torch.func.hessian's jvp decompositions call the deprecated torch.jit.script once
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.script:FutureWarning")


# -- small models and data, float64 --------------------------------------------------------
def _randomise_bn(model: nn.Module, gen: torch.Generator) -> None:
    """Give BatchNorm layers non-trivial affine parameters and running statistics."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen, dtype=torch.float64))
            m.running_var.copy_(torch.rand(m.num_features, generator=gen, dtype=torch.float64) + 0.5)
            m.weight.data.copy_(1 + 0.3 * torch.randn(m.num_features, generator=gen, dtype=torch.float64))
            m.bias.data.copy_(0.3 * torch.randn(m.num_features, generator=gen, dtype=torch.float64))


def make_mlp(batchnorm: bool, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(6, 10)]
    if batchnorm:
        layers.append(nn.BatchNorm1d(10))
    layers += [nn.Tanh(), nn.Linear(10, 8), nn.Tanh(), nn.Linear(8, 4)]
    model = nn.Sequential(*layers).double()
    _randomise_bn(model, torch.Generator().manual_seed(seed + 1))
    return model


class SmallCNN1d(nn.Module):
    def __init__(self, batchnorm: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm1d(4) if batchnorm else nn.Identity()
        self.conv2 = nn.Conv1d(4, 4, 3, stride=2)
        self.head = nn.Linear(4 * 5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.bn(self.conv1(x[:, None, :])))
        h = torch.tanh(self.conv2(h))
        return self.head(h.flatten(1))


def make_cnn(batchnorm: bool, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = SmallCNN1d(batchnorm).double()
    _randomise_bn(model, torch.Generator().manual_seed(seed + 1))
    return model


def make_data(n: int, d: int, classes: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=gen)
    return x, y


CASES = {
    "mlp": (lambda: make_mlp(False), (37, 6, 4)),
    "mlp_bn": (lambda: make_mlp(True), (37, 6, 4)),
    "cnn": (lambda: make_cnn(False), (29, 12, 3)),
    "cnn_bn": (lambda: make_cnn(True), (29, 12, 3)),
}


def dense_hessian(model: nn.Module, x, y, weights_only: bool = False) -> torch.Tensor:
    """Plain reference: torch.func.hessian of the flattened mean loss, model in eval mode."""
    model.eval()
    named = dict(model.named_parameters())
    chosen = {n: p.detach() for n, p in named.items() if not weights_only or p.ndim >= 2}
    frozen = {n: p.detach() for n, p in named.items() if n not in chosen}
    frozen.update(dict(model.named_buffers()))
    sizes = [p.numel() for p in chosen.values()]

    def loss(flat):
        parts = torch.split(flat, sizes)
        p = {n: t.view(q.shape) for (n, q), t in zip(chosen.items(), parts, strict=True)}
        out = torch.func.functional_call(model, (p, frozen), (x,))
        return F.cross_entropy(out, y)

    flat = torch.cat([p.reshape(-1) for p in chosen.values()])
    return torch.func.hessian(loss)(flat)


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    make, (n, d, c) = CASES[request.param]
    model = make()
    x, y = make_data(n, d, c, seed=3)
    H = dense_hessian(model, x, y)
    return request.param, model, x, y, H


# -- the operator ----------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["fwdrev", "revrev"])
def test_matvec_matches_dense_hessian(case, method, device):
    _, model, x, y, H = case
    op = HessianOperator(model, x, y, batch_size=8, method=method,  # uneven batches: 8, ..., rest
                         device=device)
    assert op.dim == H.shape[0]
    v = torch.randn(op.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    hv = op.matvec(v)
    assert hv.dtype == torch.float64 and hv.shape == (op.dim,)
    torch.testing.assert_close(hv, H @ v, rtol=1e-10, atol=1e-12)
    V = torch.randn(op.dim, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(op.matmat(V), H @ V, rtol=1e-10, atol=1e-12)
    assert op.num_matvecs == 4


def test_loss_is_exact_mean_over_uneven_batches(case):
    _, model, x, y, _ = case
    model.eval()
    with torch.no_grad():
        ref = F.cross_entropy(model(x), y).item()
    for bs in (1, 5, len(y), 10 * len(y)):
        assert HessianOperator(model, x, y, batch_size=bs).loss() == pytest.approx(ref, rel=1e-12)


def test_weights_only_is_the_weight_block():
    model = make_mlp(True)
    x, y = make_data(30, 6, 4)
    H = dense_hessian(model, x, y, weights_only=True)
    op = HessianOperator(model, x, y, batch_size=30, params="weights")
    assert op.names == [n for n, p in model.named_parameters() if p.ndim >= 2]
    assert op.dim == sum(p.numel() for p in model.parameters() if p.ndim >= 2) == H.shape[0]
    v = torch.randn(op.dim, dtype=torch.float64)
    torch.testing.assert_close(op.matvec(v), H @ v, rtol=1e-10, atol=1e-12)


def test_train_mode_flags_are_restored():
    model = make_mlp(True).train()
    model[1].eval()  # a mixed state must come back as it was
    x, y = make_data(20, 6, 4)
    before = [m.training for m in model.modules()]
    spectrum(model, x, y, top_k=2, steps=5, batch_size=7)
    assert [m.training for m in model.modules()] == before


def test_float32_model_runs_and_returns_float64():
    model = make_mlp(False).float()
    x, y = make_data(20, 6, 4)
    op = HessianOperator(model, x.float(), y, batch_size=20)
    H = dense_hessian(make_mlp(False), x, y)
    v = torch.randn(op.dim, dtype=torch.float64)
    hv = op.matvec(v)
    assert hv.dtype == torch.float64
    torch.testing.assert_close(hv, H @ v, rtol=1e-4, atol=1e-5)


# -- eigenvalues -----------------------------------------------------------------------------
def test_top_and_bottom_eigenvalues_match_eigvalsh(case, device):
    name, model, x, y, H = case
    ev = torch.linalg.eigvalsh(H).numpy()  # ascending
    P = H.shape[0]
    steps = min(P, 80)
    spec = spectrum(model, x, y, top_k=10, steps=steps, batch_size=13, tol=1e-8,  # 13 + 13 + rest
                    device=device)
    top_ref = ev[::-1][:10]
    np.testing.assert_allclose(spec["top"], top_ref, rtol=1e-6, atol=1e-6 * abs(ev).max())
    assert spec["top_converged"].all(), name
    assert np.all(np.diff(spec["top"]) <= 0) and np.all(np.diff(spec["bottom"]) >= 0)
    # residual bound: an eigenvalue of H lies within each Ritz value's residual
    dist = np.abs(spec["ritz_values"][:, None] - ev[None, :]).min(axis=1)
    assert np.all(dist <= spec["ritz_residuals"] + 1e-9 * abs(ev).max())
    assert spec["num_hvps"] <= steps and spec["num_params"] == P
    assert spec["loss"] == pytest.approx(HessianOperator(model, x, y, batch_size=P).loss())
    assert len(spec["alpha"]) == len(spec["beta"]) + 1 == len(spec["ritz_values"])


def test_negative_eigenvalues_are_reported_as_they_are():
    model = make_mlp(True, seed=5)  # at init the loss is not convex
    x, y = make_data(37, 6, 4, seed=3)
    H = dense_hessian(model, x, y)
    ev = torch.linalg.eigvalsh(H).numpy()
    assert ev[0] < -1e-3  # the reference spectrum has genuinely negative eigenvalues
    spec = spectrum(model, x, y, top_k=5, steps=H.shape[0], batch_size=37, tol=1e-8)
    conv = spec["bottom_converged"]
    assert conv[0]
    np.testing.assert_allclose(spec["bottom"][conv], ev[: conv.sum()][: len(spec["bottom"][conv])],
                               rtol=1e-6, atol=1e-8)
    assert spec["bottom"][0] < 0


def test_eigsh_on_linear_operator_agrees(case):
    _, model, x, y, H = case
    op = HessianOperator(model, x, y, batch_size=len(y))
    A = op.as_linear_operator()
    assert A.shape == (op.dim, op.dim) and A.dtype == np.float64
    vals = np.sort(scipy.sparse.linalg.eigsh(A, k=10, which="LA", tol=1e-12,
                                             return_eigenvectors=False))[::-1]
    ev = torch.linalg.eigvalsh(H).numpy()[::-1][:10]
    np.testing.assert_allclose(vals, ev, rtol=1e-6, atol=1e-9)
    spec = spectrum(model, x, y, top_k=10, steps=min(op.dim, 80), batch_size=len(y))
    np.testing.assert_allclose(spec["top"], vals, rtol=1e-6, atol=1e-9)


def test_lanczos_on_known_matrix_and_breakdown():
    gen = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(50, 50, generator=gen, dtype=torch.float64))
    lam = torch.cat([torch.tensor([9.0, 7.0, 5.0, -4.0]), torch.linspace(-1, 1, 46, dtype=torch.float64)])
    A = Q @ torch.diag(lam) @ Q.T
    out = lanczos(lambda v: A @ v, 50, steps=30, seed=1)
    assert out["num_matvecs"] == 30 and out["alpha"].shape == (30,) and out["beta"].shape == (29,)
    theta, res = out["ritz_values"], out["ritz_residuals"]
    assert np.all(np.diff(theta) >= 0)
    np.testing.assert_allclose(theta[[-1, -2, -3, 0]], [9.0, 7.0, 5.0, -4.0], atol=1e-8)
    dist = np.abs(theta[:, None] - lam.numpy()[None, :]).min(axis=1)
    assert np.all(dist <= res + 1e-12)
    np.testing.assert_allclose(out["ritz_weights"].sum(), 1.0, rtol=1e-12)
    # a matrix with 3 distinct eigenvalues: the Krylov space is exhausted after 3 steps
    three = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)
    B = Q @ torch.diag(three.repeat_interleave(torch.tensor([10, 20, 20]))) @ Q.T
    out = lanczos(lambda v: B @ v, 50, steps=20, seed=1)
    assert out["breakdown"] and out["num_matvecs"] == 3
    np.testing.assert_allclose(out["ritz_values"], [-1.0, 0.5, 2.0], atol=1e-10)
    # steps beyond the dimension are clamped
    assert lanczos(lambda v: A[:5, :5] @ v, 5, steps=40)["num_matvecs"] == 5


# -- SLQ -------------------------------------------------------------------------------------
def test_slq_quadrature_moments_match_each_probe():
    model = make_mlp(False)
    x, y = make_data(37, 6, 4, seed=3)
    H = dense_hessian(model, x, y)
    op = HessianOperator(model, x, y, batch_size=10)
    out = slq(op, probes=3, steps=12, seed=7)
    assert out["nodes"].shape == out["weights"].shape == (3, 12)
    assert out["num_hvps"] == 36 == op.num_matvecs
    np.testing.assert_allclose(out["weights"].sum(axis=1), 1.0, rtol=1e-12)
    Z = rademacher_probes(op.dim, 3, seed=7)
    P = op.dim
    for i in range(3):  # Gauss quadrature with m nodes is exact up to degree 2m-1
        z = Z[i]
        for k in (1, 2, 3, 5):
            ref = (z @ torch.linalg.matrix_power(H, k) @ z).item() / P
            got = (out["weights"][i] * out["nodes"][i] ** k).sum()
            assert got == pytest.approx(ref, rel=1e-8, abs=1e-12)
    assert out["trace_slq"] == pytest.approx(out["trace_hutchinson"], rel=1e-10)


def test_slq_density_and_moments_match_dense_spectrum():
    model = make_cnn(True)
    x, y = make_data(29, 12, 3, seed=3)
    H = dense_hessian(model, x, y)
    ev = torch.linalg.eigvalsh(H).numpy()
    op = HessianOperator(model, x, y, batch_size=29)
    out = slq(op, probes=40, steps=10, seed=0)
    P = op.dim
    # the trace estimate lies within 4 standard errors of the true trace
    assert abs(out["trace_hutchinson"] - ev.sum()) <= 4 * out["trace_hutchinson_stderr"]
    assert abs(out["trace_slq"] / P - ev.mean()) <= 4 * out["trace_hutchinson_stderr"] / P
    # second moment tr(H^2)/P: compare with its own probe spread
    per_probe = (out["weights"] * out["nodes"] ** 2).sum(axis=1)
    se2 = per_probe.std(ddof=1) / np.sqrt(len(per_probe))
    assert abs(out["second_moment"] - np.mean(ev**2)) <= 4 * se2
    # density: integrates to 1 and has the right first two moments on the grid
    span = ev.max() - ev.min()
    sigma = 0.01 * span
    grid = np.linspace(ev.min() - 10 * sigma - 0.1 * span, ev.max() + 10 * sigma + 0.1 * span, 20001)
    phi = spectral_density(out["nodes"], out["weights"], grid, sigma)
    assert phi.shape == grid.shape and np.all(phi >= 0)
    assert np.trapezoid(phi, grid) == pytest.approx(1.0, abs=1e-6)
    mean_phi = np.trapezoid(grid * phi, grid)
    assert mean_phi == pytest.approx(out["trace_slq"] / P, rel=1e-6, abs=1e-9)
    second_phi = np.trapezoid(grid**2 * phi, grid)  # broadening adds sigma^2
    assert second_phi == pytest.approx(out["second_moment"] + sigma**2, rel=1e-6)
    # with exact (unbroadened) dense spectrum as nodes, the density's mean is the true mean
    exact = spectral_density(ev, np.full(len(ev), 1 / len(ev)), grid, sigma)
    assert np.trapezoid(grid * exact, grid) == pytest.approx(ev.mean(), rel=1e-6, abs=1e-9)


# -- effective dimension ---------------------------------------------------------------------
def test_effective_dimension_on_known_eigenvalues():
    lam = np.array([99.0, 9.0, 1.0, 0.0, -0.5])
    ref = 0.0
    for v in lam:  # plain loop: raw eigenvalues, negative ones included
        ref += v / (v + 1.0)
    assert ref == pytest.approx(0.99 + 0.9 + 0.5 + 0.0 - 1.0)
    assert effective_dimension(lam, 1.0) == pytest.approx(ref, rel=1e-15)
    np.testing.assert_allclose(effective_dimensions(lam[:3], [1.0, 9.0]),
                               [0.99 + 0.9 + 0.5, 99 / 108 + 9 / 18 + 1 / 10], rtol=1e-14)
    # large z -> 0; tiny z -> the number of positive eigenvalues (minus the negative one's term)
    assert effective_dimension(lam[:3], 1e12) == pytest.approx(0.0, abs=1e-9)
    assert effective_dimension(lam[:3], 1e-12) == pytest.approx(3.0, rel=1e-9)
    with pytest.raises(ContractError, match="hessian.z"):
        effective_dimension(lam, 0.0)
    with pytest.raises(ContractError, match="NaN"):
        effective_dimension(np.array([1.0, np.nan]), 1.0)


def test_effective_dimension_from_converged_spectrum():
    model = make_mlp(False)
    x, y = make_data(37, 6, 4, seed=3)
    ev = torch.linalg.eigvalsh(dense_hessian(model, x, y)).numpy()
    spec = spectrum(model, x, y, top_k=5, steps=40, batch_size=37, tol=1e-6)
    conv = spec["ritz_values"][spec["ritz_converged"]]
    assert 5 <= len(conv) < 40
    # converged Ritz values are eigenvalues of H, so their N_eff matches the dense one on them
    nearest = ev[np.abs(conv[:, None] - ev[None, :]).argmin(axis=1)]
    assert effective_dimension(conv, 1e-2) == pytest.approx(effective_dimension(nearest, 1e-2), rel=1e-6)


# -- effective dimension over the whole spectrum (SLQ) -----------------------------------------
def fit(model: nn.Module, x, y, steps: int = 300) -> nn.Module:
    """Full-batch Adam in eval mode, so the Hessian is taken near a minimum (mostly PSD)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.eval()
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model


def test_effective_dimension_probes_on_known_nodes():
    nodes = np.array([[3.0, 1.0, -0.25, -2.0], [0.5, 0.0, 0.0, 0.0]])
    weights = np.array([[0.25, 0.25, 0.5, 0.0], [1.0, 0.0, 0.0, 0.0]])  # node -2 = -z has weight 0
    ref0 = 10 * (0.25 * 3 / 5 + 0.25 * 1 / 3 + 0.5 * (-0.25) / 1.75)  # the negative node kept
    ref1 = 10 * (0.5 / 2.5)
    np.testing.assert_allclose(effective_dimension_probes(nodes, weights, 10, 2.0), [ref0, ref1],
                               rtol=1e-14)
    est, se = effective_dimension_slq(nodes, weights, 10, 2.0)
    assert est == pytest.approx((ref0 + ref1) / 2, rel=1e-14)
    assert se == pytest.approx(abs(ref0 - ref1) / 2, rel=1e-12)  # std(ddof=1)/sqrt(2) of two values
    assert np.isnan(effective_dimension_slq(nodes[:1], weights[:1], 10, 2.0)[1])
    with pytest.raises(ContractError, match="-z"):
        effective_dimension_probes(nodes, np.full((2, 4), 0.25), 10, 2.0)
    with pytest.raises(ContractError, match="hessian.z"):
        effective_dimension_probes(nodes, weights, 10, -1.0)


def test_effective_dimension_slq_matches_dense_spectrum(case):
    """tr(H (H + zI)^-1) by SLQ lies within 3 SE of the dense float64 value; SE shrinks with probes."""
    name, model, x, y, _ = case
    model = fit(copy.deepcopy(model), x, y)
    ev = torch.linalg.eigvalsh(dense_hessian(model, x, y)).numpy()
    assert ev.min() < 0  # a negative eigenvalue is in the spectrum, kept as it is
    op = HessianOperator(model, x, y, batch_size=len(y))
    few = slq(op, probes=8, steps=30, seed=0)
    many = slq(op, probes=128, steps=30, seed=0)
    spec = spectrum(model, x, y, top_k=5, steps=30, batch_size=len(y))
    conv = spec["ritz_values"][spec["ritz_converged"]]
    for z in (0.01 * ev.max(), 0.1 * ev.max()):
        dense = sum(v / (v + z) for v in ev)
        est8, se8 = effective_dimension_slq(few["nodes"], few["weights"], op.dim, z)
        est, se = effective_dimension_slq(many["nodes"], many["weights"], op.dim, z)
        assert abs(est - dense) <= 3 * se, (name, z, est, se, dense)
        assert abs(est8 - dense) <= 3 * se8, (name, z, est8, se8, dense)
        assert se < 0.6 * se8  # 16x the probes: SE / 4 expected
        assert se < 0.1 * dense
        # the converged top eigenvalues give a lower bound, well below the whole spectrum's value
        assert effective_dimension(conv, z) < dense - 3 * se


# -- bad input -------------------------------------------------------------------------------
def test_top_k_larger_than_steps_names_both_keys():
    model = make_mlp(False)
    x, y = make_data(10, 6, 4)
    with pytest.raises(ContractError, match=r"hessian\.top_k.*hessian\.steps"):
        spectrum(model, x, y, top_k=20, steps=10, batch_size=10)
    with pytest.raises(ContractError, match=r"hessian\.steps"):
        spectrum(model, x, y, top_k=1, steps=0, batch_size=10)
    with pytest.raises(ContractError, match=r"hessian\.params"):
        spectrum(model, x, y, top_k=1, steps=3, batch_size=10, params="biases")


def test_nan_loss_names_the_checkpoint():
    model = make_mlp(False)
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    x, y = make_data(10, 6, 4)
    with pytest.raises(ContractError, match=r"loss is NaN.*runs/seed3\.pt"):
        spectrum(model, x, y, top_k=2, steps=4, batch_size=10, source="runs/seed3.pt")


def test_a_spectrum_file_with_nan_nodes_is_named_and_nan_padding_is_not(tmp_path):
    """top/bottom are NaN past the Ritz values found (by design); a NaN SLQ node is damage."""
    from multirun.hessian.effdim import SPECTRUM_KEYS
    arrays = {k: np.zeros(3) for k in SPECTRUM_KEYS}
    arrays["top"] = arrays["bottom"] = np.array([1.0, np.nan, np.nan])
    path = tmp_path / "shard-000-0.npz"
    np.savez(path, **arrays)
    assert np.isnan(load_spectrum(path)["top"]).sum() == 2
    arrays["slq_nodes"] = np.array([[0.5, np.nan]])
    np.savez(path, **arrays)
    with pytest.raises(ContractError, match=r"shard-000-0\.npz: slq_nodes hold NaN or inf: the "
                                            r"file is damaged; remake it with: .*--forcerun"):
        load_spectrum(path)
    del arrays["seed"]
    np.savez(path, **arrays)
    with pytest.raises(ContractError, match=r"shard-000-0\.npz: lacks arrays \['seed'\]"):
        load_spectrum(path)


def test_slq_lockstep_equals_one_probe_at_a_time():
    model = make_cnn(False)
    x, y = make_data(29, 12, 3, seed=3)
    op = HessianOperator(model, x, y, batch_size=29)
    one = slq(op, probes=3, steps=9, seed=4, block=1)
    lock = slq(op, probes=3, steps=9, seed=4, block=3)
    for key in ("nodes", "weights"):
        np.testing.assert_allclose(lock[key], one[key], rtol=1e-9, atol=1e-12)
    assert one["num_hvps"] == lock["num_hvps"] == 27


def test_lanczos_block_runs_are_independent_lanczos_runs():
    gen = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(30, 30, generator=gen, dtype=torch.float64))
    A = Q @ torch.diag(torch.linspace(-2, 5, 30, dtype=torch.float64)) @ Q.T
    starts = torch.randn(3, 30, generator=gen, dtype=torch.float64)
    starts[1] = Q[:, :2] @ torch.tensor([1.0, 2.0], dtype=torch.float64)  # breaks down after 2 steps
    runs = lanczos_block(lambda V: V @ A, starts, steps=12)
    assert [r["num_matvecs"] for r in runs] == [12, 2, 12]
    for r, s in zip(runs, starts, strict=True):
        single = lanczos(lambda v: A @ v, 30, steps=12, v0=s)
        np.testing.assert_allclose(r["ritz_values"], single["ritz_values"], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(r["alpha"], single["alpha"], rtol=1e-10, atol=1e-12)
