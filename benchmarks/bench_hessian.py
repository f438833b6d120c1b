"""Hessian benchmark: Lanczos vs PyHessian-style deflated power iteration, HVP vs gradient cost.

Everything runs in one process on one trained MLP of the default run's family, at width
256 (40 -> 256 -> 256 -> 10, ReLU; the default run's models are 40 -> 100 -> 100 -> 10,
so this is the harder case), MNIST-1D generated offline, trained briefly with plain SGD
so that the Hessian is not the one at initialisation), on the first ``--examples``
training examples with the full batch (``hessian.batch_size`` of the default config).

Printed:

1. one HVP (forward-over-reverse and double backward) against one gradient of the same
   loss: median seconds and the ratio (target: HVP <= 3 x gradient);
2. top-20 eigenvalues: a reference Lanczos run (independent start vector, many steps,
   certified by its residual bounds); this project's Lanczos, the number of steps/HVPs
   after which its top-20 match the reference to 1e-3 relative (oracle) and after which
   its own residual bounds certify 1e-3 (a stopping rule usable without a reference);
   the deflated power iteration of PyHessian (``hessian.eigenvalues(maxIter=100,
   tol=1e-3, top_n=20)``, re-implemented faithfully on the same HVP): HVPs, seconds and
   its error against the reference. Target: Lanczos needs <= 1/5 of the HVPs;
3. the default workflow's cost per model: ``spectrum(top_k=20, steps=80)`` +
   ``slq(probes=4, steps=60)``.

``--resnet18`` instead times Lanczos top-20 on the zoo's ResNet-18 (``--resnet-width`` 64:
11.2M parameters, BatchNorm in eval mode) at its initialisation, on ``--resnet-examples``
fabricated CIFAR-shaped images (the cost does not depend on the values), on ``--device``
(CUDA when present): one gradient, one HVP (ratio), then ``operator_spectrum(top_k=20,
steps=--resnet-steps)`` with its seconds, HVPs, converged count, and the ratio of its time
to its HVPs' time (the cost of Lanczos itself: reorthogonalisation, the tridiagonal
eigenproblem). At full width it is GPU work (minutes per HVP on 2 CPU cores); on a CPU use
e.g. ``--resnet-width 8 --resnet-examples 128``.

Usage: ``.venv/bin/python benchmarks/bench_hessian.py [--examples 4000] [--threads 2]``,
``.venv/bin/python benchmarks/bench_hessian.py --resnet18 [--device cuda]``.
The machine is shared: expect noisy seconds; HVP counts are exact.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from benchlib import device_name, sync
from torch import nn

from multirun.contracts import pick_device
from multirun.hessian import HessianOperator, lanczos, operator_spectrum, slq, spectrum
from multirun.train import init_model


def load_mnist1d(examples: int) -> tuple[torch.Tensor, torch.Tensor]:
    from multirun.data import make_mnist1d

    data = make_mnist1d()  # generated offline, the workflow's default dataset
    return torch.from_numpy(data["x_train"][:examples]), torch.from_numpy(data["y_train"][:examples])


def train_mlp(x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float, seed: int = 0) -> nn.Module:
    """MLP 40 -> 256 -> 256 -> 10 (ReLU) trained with plain SGD (no momentum), batch 128."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(x.shape[1], 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                          nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(128):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model


def median_seconds(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def power_iteration_pyhessian(matvec, dim: int, *, top_n: int, max_iter: int = 100, tol: float = 1e-3,
                              seed: int = 0) -> tuple[list[float], int]:
    """PyHessian's ``hessian.eigenvalues``: power iteration per eigenvalue with deflation.

    For each eigenvalue: a random normal start vector; every iteration orthonormalises the
    vector against the eigenvectors found so far, takes ``Hv``, the Rayleigh quotient
    ``v.Hv`` as the estimate and ``Hv/|Hv|`` as the next vector; it stops when the relative
    change of the estimate ``|new - old| / (|old| + 1e-6)`` drops below ``tol`` (or after
    ``max_iter`` HVPs) and keeps the last normalised ``Hv`` as the eigenvector.
    Returns the eigenvalues (in the order found) and the number of HVPs.
    """
    gen = torch.Generator().manual_seed(seed)
    found_vecs: list[torch.Tensor] = []
    values: list[float] = []
    hvps = 0
    for _ in range(top_n):
        v = torch.randn(dim, generator=gen, dtype=torch.float64)
        v = v / v.norm()
        value = None
        for _ in range(max_iter):
            for u in found_vecs:  # PyHessian's orthnormal(): Gram-Schmidt, then normalise
                v = v - torch.dot(v, u) * u
            v = v / v.norm()
            hv = matvec(v)
            hvps += 1
            new = float(torch.dot(hv, v))
            v = hv / hv.norm()
            if value is not None and abs(value - new) / (abs(value) + 1e-6) < tol:
                break
            value = new
        values.append(value if value is not None else new)
        found_vecs.append(v)
    return values, hvps


def leading_ritz(alpha: np.ndarray, beta_all: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Ritz values (descending) and residual bounds of the leading m x m tridiagonal."""
    theta, S = scipy.linalg.eigh_tridiagonal(alpha[:m], beta_all[: m - 1])
    res = np.abs(beta_all[m - 1] * S[-1, :])
    return theta[::-1], res[::-1]


def bench_resnet18(args) -> None:
    """Lanczos top-20 on ResNet-18 at initialisation, fabricated CIFAR-shaped data."""
    dev = pick_device(args.device)
    g = torch.Generator().manual_seed(0)
    n = args.resnet_examples
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    model = init_model(0, {"name": "resnet18", "width": args.resnet_width, "batchnorm": True},
                       (3, 32, 32), 10)
    op = HessianOperator(model, x, y, batch_size=args.resnet_batch, device=dev)
    print(f"ResNet-18 width {args.resnet_width}: P = {op.dim:,} parameters, {n} examples in "
          f"batches of {args.resnet_batch}, device {dev} ({device_name(dev)}), torch {torch.__version__}")
    v = torch.randn(op.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def synced(fn):
        def run():
            fn()
            sync(dev)
        return run

    t_grad = median_seconds(synced(op.gradient), args.reps)
    t_hvp = median_seconds(synced(lambda: op.matvec(v)), args.reps)
    print(f"  gradient {t_grad:.3f} s, HVP {t_hvp:.3f} s: ratio {t_hvp / t_grad:.2f} x gradient "
          f"(median of {args.reps})")
    sync(dev)
    t = time.perf_counter()
    out = operator_spectrum(op, top_k=20, steps=args.resnet_steps, tol=args.rtol)
    sync(dev)
    dt = time.perf_counter() - t
    hvps = int(out["num_hvps"])
    print(f"  Lanczos top-20 ({args.resnet_steps} steps): {dt:.1f} s, {hvps} HVPs, "
          f"{int(out['top_converged'].sum())}/20 converged (residual <= {args.rtol:g} x "
          f"|lambda_max|); lambda_1..3 = {np.round(out['top'][:3], 4)}")
    print(f"  RATIO Lanczos time / (HVPs x one HVP): {dt / (hvps * t_hvp):.2f} "
          "(1.0 = the HVPs are all the cost)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--examples", type=int, default=4000, help="training examples in the loss")
    ap.add_argument("--epochs", type=int, default=8, help="SGD epochs before the Hessian")
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--top", type=int, default=20, help="eigenvalues compared")
    ap.add_argument("--rtol", type=float, default=1e-3, help="relative accuracy target")
    ap.add_argument("--power-tol", type=float, default=1e-3,
                    help="stopping tolerance of the power iteration (PyHessian's default 1e-3)")
    ap.add_argument("--ref-steps", type=int, default=160, help="Lanczos steps of the reference")
    ap.add_argument("--max-steps", type=int, default=100, help="Lanczos steps of the scanned run")
    ap.add_argument("--reps", type=int, default=7, help="repetitions of the HVP/gradient timing")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (0: torch's default); 1 by default because on a shared "
                         "2-core machine 2 threads are 3-10x slower under contention")
    ap.add_argument("--skip-workflow", action="store_true", help="skip the default-workflow timing")
    ap.add_argument("--compare-slq-block", action="store_true",
                    help="also time SLQ one probe after the other (block=1) against lockstep")
    ap.add_argument("--resnet18", action="store_true",
                    help="only: Lanczos top-20 on ResNet-18 (see the module docstring)")
    ap.add_argument("--device", default="auto", help="--resnet18: auto | cpu | cuda")
    ap.add_argument("--resnet-width", type=int, default=64)
    ap.add_argument("--resnet-examples", type=int, default=5000)
    ap.add_argument("--resnet-batch", type=int, default=500)
    ap.add_argument("--resnet-steps", type=int, default=80)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.resnet18:
        bench_resnet18(args)
        return
    print(f"machine: {device_name()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads (shared machine: seconds are noisy)")

    t0 = time.perf_counter()
    x, y = load_mnist1d(args.examples)
    model = train_mlp(x, y, epochs=args.epochs, lr=args.lr)
    op = HessianOperator(model, x, y, batch_size=len(y))
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    print(f"model: MLP 40-256-256-10, P = {op.dim} parameters; {len(y)} examples; trained "
          f"{args.epochs} epochs SGD lr {args.lr} in {time.perf_counter() - t0:.1f}s: "
          f"train loss {op.loss():.4f}, accuracy {acc:.3f}")

    # 1. cost of one HVP against one gradient ------------------------------------------------
    v = torch.randn(op.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    op_rr = HessianOperator(model, x, y, batch_size=len(y), method="revrev")
    t_grad = median_seconds(op.gradient, args.reps)
    t_fr = median_seconds(lambda: op.matvec(v), args.reps)
    t_rr = median_seconds(lambda: op_rr.matvec(v), args.reps)
    V4 = torch.randn(op.dim, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    t_mm = median_seconds(lambda: op.matmat(V4), max(2, args.reps // 2)) / 4
    print(f"\n[1] one HVP vs one gradient (median of {args.reps})")
    print(f"  gradient                   {t_grad * 1e3:8.1f} ms")
    print(f"  HVP forward-over-reverse   {t_fr * 1e3:8.1f} ms   ratio {t_fr / t_grad:.2f} x gradient")
    print(f"  HVP double backward        {t_rr * 1e3:8.1f} ms   ratio {t_rr / t_grad:.2f} x gradient")
    print(f"  HVP fwd-over-rev, 4 at once {t_mm * 1e3:7.1f} ms   ratio {t_mm / t_grad:.2f} x gradient "
          "(per vector, vmapped matmat as SLQ uses)")

    # 2. top eigenvalues ---------------------------------------------------------------------
    k = args.top
    t = time.perf_counter()
    ref = lanczos(op.matvec, op.dim, steps=args.ref_steps, seed=12345)
    t_ref = time.perf_counter() - t
    ref_top = ref["ritz_values"][::-1][:k]
    ref_res = ref["ritz_residuals"][::-1][:k]
    print(f"\n[2] top-{k} eigenvalues")
    print(f"  reference: Lanczos {ref['num_matvecs']} steps, seed 12345, {t_ref:.1f}s; "
          f"max residual bound / |lambda| = {np.max(ref_res / np.abs(ref_top)):.1e}")
    print(f"  lambda_1..3 = {ref_top[:3]}, lambda_{k} = {ref_top[-1]:.6g}, "
          f"most negative Ritz value = {ref['ritz_values'][0]:.4g}")

    stamps: list[float] = []

    def timed_matvec(u):
        out = op.matvec(u)
        stamps.append(time.perf_counter())
        return out

    t_start = time.perf_counter()
    run = lanczos(timed_matvec, op.dim, steps=args.max_steps, seed=0)
    beta_all = np.append(run["beta"], run["beta_last"])
    m_oracle = m_cert = m_gap = None
    err_oracle = err_cert = err_gap = float("nan")
    for m in range(k + 1, run["num_matvecs"] + 1):
        top, res = leading_ritz(run["alpha"], beta_all, m)
        err = np.max(np.abs(top[:k] - ref_top) / np.abs(ref_top))
        # gap-refined bound: |lambda - theta| <= r^2 / gap, gap to the nearest other Ritz value
        gaps = np.array([np.min(np.abs(np.delete(top, i) - top[i])) for i in range(k)])
        bound_gap = np.minimum(res[:k], res[:k] ** 2 / np.maximum(gaps, 1e-300))
        if m_oracle is None and err <= args.rtol:
            m_oracle, err_oracle = m, err
        if m_cert is None and np.all(res[:k] <= args.rtol * np.abs(top[:k])):
            m_cert, err_cert = m, err
        if m_gap is None and np.all(bound_gap <= args.rtol * np.abs(top[:k])):
            m_gap, err_gap = m, err
        if None not in (m_oracle, m_cert, m_gap):
            break

    def seconds_at(m):
        return stamps[m - 1] - t_start if m is not None else float("nan")

    t = time.perf_counter()
    pw_vals, pw_hvps = power_iteration_pyhessian(op.matvec, op.dim, top_n=k, tol=args.power_tol, seed=0)
    t_pw = time.perf_counter() - t
    pw_sorted = np.sort(np.asarray(pw_vals))[::-1]
    pw_err = np.abs(pw_sorted - ref_top) / np.abs(ref_top)

    def fmt(m):
        return "not reached" if m is None else str(m)

    print(f"  Lanczos (this project), one run scanned over its first m steps:\n"
          f"    1e-3 reached (oracle: vs reference) after {fmt(m_oracle)} HVPs "
          f"({seconds_at(m_oracle):.1f}s, max rel err {err_oracle:.1e})\n"
          f"    certified by residual bounds r <= 1e-3 |theta| after {fmt(m_cert)} HVPs "
          f"({seconds_at(m_cert):.1f}s, max rel err {err_cert:.1e})\n"
          f"    certified by gap-refined bounds min(r, r^2/gap) after {fmt(m_gap)} HVPs "
          f"({seconds_at(m_gap):.1f}s, max rel err {err_gap:.1e})")
    print(f"  power iteration (PyHessian, deflated, tol {args.power_tol:g}): {pw_hvps} HVPs, {t_pw:.1f}s, "
          f"max rel err {pw_err.max():.1e} (median {np.median(pw_err):.1e}); "
          f"{int(np.sum(pw_err > args.rtol))}/{k} eigenvalues off by more than {args.rtol:g}")
    if m_oracle:
        print(f"  ratio HVPs Lanczos/power (target <= 0.2): oracle {m_oracle / pw_hvps:.3f}, "
              f"certified {(m_cert or np.nan) / pw_hvps:.3f}, gap-refined {(m_gap or np.nan) / pw_hvps:.3f}"
              f"; seconds ratio (certified) {seconds_at(m_cert) / t_pw:.3f}")

    # 3. the default workflow's cost per model ----------------------------------------------
    if not args.skip_workflow:
        t = time.perf_counter()
        spec = spectrum(model, x, y, top_k=20, steps=80, batch_size=len(y))
        t_spec = time.perf_counter() - t
        t = time.perf_counter()
        dens = slq(HessianOperator(model, x, y, batch_size=len(y)), probes=4, steps=60)
        t_slq = time.perf_counter() - t
        err80 = np.abs(spec["top"][:k] - ref_top) / np.abs(ref_top)
        print("\n[3] default workflow per model")
        print(f"  spectrum(top_k=20, steps=80): {t_spec:.1f}s, {int(spec['num_hvps'])} HVPs, "
              f"{int(spec['top_converged'].sum())}/20 top converged (tol 1e-6 x |lambda_max|), "
              f"{int(spec['ritz_converged'].sum())} Ritz values converged; max rel err of top-{k} "
              f"vs reference {err80.max():.1e}")
        print(f"  slq(probes=4, steps=60): {t_slq:.1f}s, {int(dens['num_hvps'])} HVPs; trace SLQ "
              f"{float(dens['trace_slq']):.4g}, Hutchinson {float(dens['trace_hutchinson']):.4g} "
              f"+- {float(dens['trace_hutchinson_stderr']):.2g}")
        print(f"  total {t_spec + t_slq:.1f}s")
        if args.compare_slq_block:
            t = time.perf_counter()
            seq = slq(HessianOperator(model, x, y, batch_size=len(y)), probes=4, steps=60, block=1)
            t_seq = time.perf_counter() - t
            same = np.allclose(seq["nodes"], dens["nodes"], rtol=1e-6, atol=1e-9 * abs(ref_top[0]))
            print(f"  slq one probe at a time (block=1): {t_seq:.1f}s; lockstep/sequential seconds "
                  f"{t_slq / t_seq:.2f}; same nodes: {same}")
    print(f"\nbenchmark wall time {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
