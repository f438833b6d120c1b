"""The spectrum and width-sweep figures render from made-up data and show what they claim."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from multirun.plots.spectra import plot_spectrum, plot_width_sweep  # noqa: E402


def fake_spectrum(rng, scale: float, slq: bool = True) -> dict[str, np.ndarray]:
    top = np.sort(np.exp(rng.normal(0, 1, 10)) * scale)[::-1]
    bottom = np.sort(rng.normal(0, 0.05, 10))
    out = {"top": top, "bottom": bottom, "top_converged": np.arange(10) < 7,
           "bottom_converged": np.arange(10) < 2}
    if slq:
        nodes = np.sort(rng.normal(0, 0.1, (3, 15)), axis=1)
        nodes[:, -3:] = top[:3]
        out["slq_nodes"], out["slq_weights"] = nodes, np.full((3, 15), 1 / 15)
    return out


def test_plot_spectrum_overlays_models(tmp_path):
    rng = np.random.default_rng(0)
    spectra = {"w8": fake_spectrum(rng, 1.0), "w32": fake_spectrum(rng, 3.0)}
    spectra["w32"]["top"][-1] = np.nan  # a Lanczos run that stopped early
    fig = plot_spectrum(spectra, sigma=0.02, title="t")
    ritz, dens = fig.axes[:2]
    assert ritz.get_yscale() == "symlog" and dens.get_yscale() == "log"
    # one top and one bottom line per model, one density curve per model
    assert len(ritz.get_lines()) == 2 * 2 + 1  # + the zero line
    assert [ln.get_label() for ln in dens.get_lines() if not ln.get_label().startswith("_")] == ["w8", "w32"]
    # NaN entries are dropped, not drawn
    assert len(ritz.get_lines()[2].get_xdata()) == 9
    # the density curves integrate to ~1 over their grid
    for ln in dens.get_lines()[:2]:
        x, y = ln.get_xdata(), ln.get_ydata()
        if len(x) > 2:
            assert np.trapezoid(y, x) == pytest.approx(1.0, abs=1e-3)
    fig.savefig(tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 10_000
    plt.close(fig)


def test_plot_spectrum_without_slq_has_one_panel():
    rng = np.random.default_rng(1)
    fig = plot_spectrum({"only": fake_spectrum(rng, 1.0, slq=False)})
    assert len(fig.axes) == 1
    plt.close(fig)
    with pytest.raises(ValueError):
        plot_spectrum({})


def test_plot_width_sweep_panels_and_parameter_axis(tmp_path):
    widths = [4, 8, 16, 64]
    rows = []
    for w in widths:
        for seed in range(2):
            for z in (1.0, 10.0):
                rows.append({"width": w, "num_params": 51 * w + 10, "train_loss": 1.0 / w + seed,
                             "test_loss": 1.0 + seed, "z": z,
                             "effective_dimension": w / z + seed})
    fig = plot_width_sweep(rows, title="sweep")
    main = [ax for ax in fig.axes if ax.get_xlabel().startswith("width")]
    assert len(main) == 3
    for ax in main:
        assert ax.get_xscale() == "log"
        np.testing.assert_allclose(ax.get_xticks(), widths)
    # train-loss panel: seed mean per width
    line = main[0].containers[0].lines[0]
    np.testing.assert_allclose(line.get_ydata(), [1.0 / w + 0.5 for w in widths])
    # effective dimension panel: one curve per z
    effd = [c.lines[0] for c in main[2].containers]
    assert len(effd) == 2
    np.testing.assert_allclose(effd[1].get_ydata(), [w / 10 + 0.5 for w in widths])
    # parameter counts on the secondary axes
    fig.canvas.draw()
    tops = [child for ax in main for child in ax.child_axes]
    assert len(tops) == 3
    texts = {t.get_text() for ax in tops for t in ax.get_xticklabels()}
    assert {"214", "418", "826", "3.3k"} <= texts
    fig.savefig(tmp_path / "w.png")
    plt.close(fig)
    with pytest.raises(ValueError, match="test_loss"):
        plot_width_sweep({"width": [1], "num_params": [1], "train_loss": [1],
                          "effective_dimension": [1]})


def fake_grid(widths=(16, 32, 64), depths=(1, 2, 3), seeds=2) -> list[dict]:
    rows = []
    for d in depths:
        for w in widths:
            params = 40 * w + (d - 1) * w * w + 10 * w
            for seed in range(seeds):
                for z in (1.0, 5e-4):
                    rows.append({"width": w, "depth": d, "seed": seed, "num_params": params, "z": z,
                                 "train_loss": 1.0 / (w * d) + 0.01 * seed,
                                 "test_loss": 2.0 + d - np.log2(w) / 10,
                                 "effective_dimension": w * d / z + seed,
                                 "effective_dimension_topk": w / z})
    return rows


def test_plot_width_depth_heatmaps_and_parameter_curves(tmp_path):
    from multirun.plots.width_depth import grid_means, plot_width_depth

    rows = fake_grid()
    g = grid_means(rows)  # the smallest z by default
    assert g["z"] == 5e-4
    np.testing.assert_array_equal(g["widths"], [16, 32, 64])
    np.testing.assert_array_equal(g["depths"], [1, 2, 3])
    # seed means per cell, depth along rows
    assert g["effective_dimension"][1, 2] == pytest.approx(64 * 2 / 5e-4 + 0.5)
    assert g["train_loss"][2, 0] == pytest.approx(1 / 48 + 0.005)
    fig = plot_width_depth(rows, z=1.0, interpolating=0.02, title="grid")
    heat = [ax for ax in fig.axes if ax.get_xlabel().startswith("width")]
    assert len(heat) == 4
    titles = [ax.get_title() for ax in heat]
    assert "lower bound" in titles[1] and titles[2] == "test loss" and titles[3] == "train loss"
    mesh = heat[0].collections[0]
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(3, 3)[0],
                               [16.5, 32.5, 64.5])  # z = 1 rows, depth 1
    # each panel: white equal-parameter contours (labelled) and the interpolation edge
    centres = np.stack(np.meshgrid(np.log2([16, 32, 64]), [1, 2, 3]), -1).reshape(-1, 2)
    for ax in heat:
        labels = {t.get_text() for t in ax.texts}
        assert "2k" in labels or "5k" in labels
        values = [t for t in ax.texts if t.get_bbox_patch() is not None]
        assert len(values) == 9 and all(t.get_zorder() > 2 for t in values)  # above the curves
        for t in ax.texts:  # curve labels keep clear of the cell values
            if t.get_bbox_patch() is None:
                assert np.linalg.norm(centres - np.asarray(t.get_position()), axis=1).min() >= 0.3
        assert any(getattr(c, "get_edgecolor", None) is not None for c in ax.collections[1:])
    fig.savefig(tmp_path / "g.png")
    assert (tmp_path / "g.png").stat().st_size > 10_000
    plt.close(fig)
    with pytest.raises(ValueError, match="z = 3"):
        grid_means(rows, z=3.0)


def test_plot_width_sweep_draws_both_estimates_with_bars_and_bands():
    widths = [8, 32, 128]
    rows = []
    for w in widths:
        for seed in range(3):
            rows.append({"width": w, "num_params": 51 * w + 10, "train_loss": 1.0 / w,
                         "test_loss": 1.0 + seed, "z": 1.0, "effective_dimension": w + seed,
                         "effective_dimension_se": 2.0, "effective_dimension_topk": w / 4})
    fig = plot_width_sweep(rows)
    ax = [a for a in fig.axes if a.get_xlabel().startswith("width")][2]
    assert ax.get_yscale() == "log"
    (est,) = ax.containers  # one errorbar per z: the whole-spectrum estimate
    np.testing.assert_allclose(est.lines[0].get_ydata(), [w + 1 for w in widths])
    # bars: 2 SE of the seed mean = 2 * sqrt(3 * 2^2) / 3
    seg = est.lines[2][0].get_segments()
    np.testing.assert_allclose([s[1, 1] - s[0, 1] for s in seg], 2 * 2 * 2 * np.sqrt(3) / 3)
    labels = [ln.get_label() for ln in ax.get_lines()]
    topk = ax.get_lines()[labels.index("z = 1: converged top eigenvalues (lower bound)")]
    np.testing.assert_allclose(topk.get_ydata(), [w / 4 for w in widths])
    assert topk.get_linestyle() == "--"
    # a min..max band over seeds on the estimate and the test loss (the top-k has none here)
    assert len(ax.collections) >= 2
    plt.close(fig)
