"""The neighbour figures render on small synthetic data (1-D signals and images) and pick the
right examples."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from multirun.contracts import ContractError  # noqa: E402
from multirun.plots import neighbours as nplots  # noqa: E402


@pytest.fixture
def toy():
    rng = np.random.default_rng(0)
    nq, nt, k = 30, 50, 10
    similarity = -np.sort(-rng.uniform(0, 1, (nq, k)), axis=1).astype(np.float32)
    index = np.stack([rng.choice(nt, k, replace=False) for _ in range(nq)]).astype(np.int32)
    return {
        "index": index, "similarity": similarity,
        "x_test": rng.standard_normal((nq, 40)).astype(np.float32),
        "x_train": rng.standard_normal((nt, 40)).astype(np.float32),
        "y_test": rng.integers(0, 3, nq), "y_train": rng.integers(0, 3, nt),
        "images_test": rng.integers(0, 255, (nq, 6, 6, 3), dtype=np.uint8),
        "images_train": rng.integers(0, 255, (nt, 6, 6, 3), dtype=np.uint8),
    }


def _saved(fig, tmp_path, name):
    path = tmp_path / f"{name}.png"
    nplots.save_figure(fig, [path], dpi=60)
    assert path.stat().st_size > 1000
    return path


def test_rank_window_picks_the_right_pairs(toy, tmp_path):
    order = nplots.rank_by_top_similarity(toy["similarity"])
    assert (np.diff(toy["similarity"][order, 0]) <= 0).all()
    fig = nplots.similar_pairs(toy["index"], toy["similarity"], toy["x_test"], toy["x_train"],
                               ranks=(3, 8), y_test=toy["y_test"], y_train=toy["y_train"])
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 6 and titles[0].startswith("#3 ")
    assert f"s={toy['similarity'][order[2], 0]:.2f}" in titles[0]
    _saved(fig, tmp_path, "pairs")
    # images, and a window past the end is clipped
    fig = nplots.similar_pairs(toy["index"], toy["similarity"], toy["x_test"], toy["x_train"],
                               ranks=(25, 60), images_test=toy["images_test"],
                               images_train=toy["images_train"])
    assert len([ax for ax in fig.axes if ax.get_title()]) == 6
    _saved(fig, tmp_path, "pairs_images")
    with pytest.raises(ContractError, match="pair_ranks"):
        nplots.similar_pairs(toy["index"], toy["similarity"], toy["x_test"], toy["x_train"],
                             ranks=(5, 2))


def test_confident_failures_are_mislabelled_nearest(toy, tmp_path):
    fig = nplots.confident_failures(toy["index"], toy["similarity"], toy["y_test"],
                                    toy["y_train"], toy["x_test"], toy["x_train"], rows=4)
    first_column = [ax for ax in fig.axes if ax.get_title().startswith("test")]
    assert len(first_column) == 4
    order = nplots.rank_by_top_similarity(toy["similarity"])
    wrong = [q for q in order if toy["y_train"][toy["index"][q, 0]] != toy["y_test"][q]][:4]
    assert [ax.get_title() for ax in first_column] == [f"test {toy['y_test'][q]}" for q in wrong]
    _saved(fig, tmp_path, "failures")
    fig = nplots.confident_failures(toy["index"], toy["similarity"], toy["y_test"],
                                    toy["y_train"], toy["x_test"], toy["x_train"], rows=2,
                                    images_test=toy["images_test"],
                                    images_train=toy["images_train"])
    _saved(fig, tmp_path, "failures_images")


def test_random_neighbours_and_histogram(toy, tmp_path):
    fig = nplots.random_neighbours(toy["index"], toy["index"][:, ::-1].copy(), toy["x_test"],
                                   toy["x_train"], examples=5, y_test=toy["y_test"],
                                   y_train=toy["y_train"])
    assert len(fig.axes) == 5 * 5
    _saved(fig, tmp_path, "random")
    fig = nplots.random_neighbours(toy["index"], None, toy["x_test"], toy["x_train"], examples=4,
                                   images_test=toy["images_test"],
                                   images_train=toy["images_train"])
    assert len(fig.axes) == 3 * 4
    _saved(fig, tmp_path, "random_images")
    p = np.random.default_rng(1).integers(0, 9, 100) / 8
    _saved(nplots.probability_correct_histogram(p, num_models=8), tmp_path, "pcorrect")


def _rows(method, vote="", k="", base=0.5):
    return [{"n_models": str(n), "subset": str(s), "method": method, "vote": vote, "k": str(k),
             "accuracy": str(base + 0.01 * n + 0.001 * s)} for n in (2, 4, 8) for s in range(3)]


def test_accuracy_curves(tmp_path):
    rows = _rows("kernel", "majority", 3) + _rows("kernel", "weighted", 20) + _rows("ensemble") \
        + _rows("single", base=0.4)
    sizes, mean, lo, hi = nplots.curve(rows, method="kernel", vote="majority", k=3)
    np.testing.assert_array_equal(sizes, [2, 4, 8])
    np.testing.assert_allclose(mean, 0.5 + 0.01 * sizes + 0.001)
    np.testing.assert_allclose(hi - lo, 0.002)
    _saved(nplots.accuracy_vs_models(rows), tmp_path, "accuracy")
    per_class = {c: _rows("kernel", "majority", 3, base=0.1 + 0.01 * c) for c in range(3)}
    _saved(nplots.per_class_vs_summed(rows, per_class, vote="majority", k=3), tmp_path, "pc")
    raw = _rows("kernel", "majority", 3, base=0.45)
    _saved(nplots.logsoftmax_vs_raw(rows, raw, vote="majority", k=3), tmp_path, "raw")
    with pytest.raises(ContractError, match="no accuracy rows"):
        nplots.curve(rows, method="kernel", vote="majority", k=7)


def test_neighbour_figures_script(tmp_path):
    """scripts/neighbour_figures.py end to end with a stand-in for the snakemake object."""
    import csv
    import json
    import runpy
    from pathlib import Path
    from types import SimpleNamespace

    from multirun import contracts, kernel, knn

    rng = np.random.default_rng(3)
    c, nt, nq, m = 3, 60, 40, 6
    y_train, y_test = rng.integers(0, c, nt), rng.integers(0, c, nq)
    x_train = rng.standard_normal((nt, 40)).astype(np.float32)
    x_test = rng.standard_normal((nq, 40)).astype(np.float32)
    contracts.save_npz(tmp_path / "dataset.npz", x_train=x_train, y_train=y_train, x_test=x_test,
                       y_test=y_test)
    train = (np.eye(c)[y_train] * 2 + rng.standard_normal((m, nt, c))).astype(np.float16)
    test = (np.eye(c)[y_test] * 2 + rng.standard_normal((m, nq, c))).astype(np.float16)
    for split, arr in (("train", train), ("test", test)):
        np.save(tmp_path / f"{split}.npy", arr)
        np.save(tmp_path / f"features_{split}.npy",
                rng.standard_normal((m, len(arr[0]), 8)).astype(np.float16))
    # rule neighbour_data first (it computes), then the figure script (it only draws)
    data_out = SimpleNamespace(per_class=str(tmp_path / "per_class.csv"),
                               arrays=str(tmp_path / "figure_data.npz"))
    data_smk = SimpleNamespace(
        input=SimpleNamespace(data=str(tmp_path / "dataset.npz"),
                              train=[str(tmp_path / "train.npy")],
                              test=[str(tmp_path / "test.npy")],
                              features_train=str(tmp_path / "features_train.npy"),
                              features_test=str(tmp_path / "features_test.npy")),
        output=data_out,
        params=SimpleNamespace(model_counts=[2, m], subsets=2, subset_seed=0, k=3,
                               vote="majority", power=None, chunk_models=4, block=16,
                               memory_gb=None, precision="fp32"),
        config={"kernel": {"device": "cpu"}}, resources={"mem_mb": 4000},
        log=[str(tmp_path / "data-log.txt")], threads=1, rule="neighbour_data",
    )
    scripts = Path(__file__).resolve().parents[1] / "scripts"
    runpy.run_path(str(scripts / "neighbour_data.py"), init_globals={"snakemake": data_smk})
    per_class = contracts.load_csv(data_out.per_class)
    assert len(per_class) == c * 3 and {r["class"] for r in per_class} == {"0", "1", "2"}
    arrays = contracts.load_npz(data_out.arrays, ("p_correct", "feature_index", "num_models"))
    assert arrays["feature_index"].shape == (nq, 2) and int(arrays["num_models"]) == m
    shards = {s: kernel.ShardedLogits([tmp_path / f"{s}.npy"]) for s in ("train", "test")}
    subsets = knn.model_subsets(m, [2, m], 2, 0)
    nbrs = [kernel.neighbours(shards["test"], shards["train"], k=10, models=sel,
                              progress=False) for _, sel in subsets]
    contracts.save_npz(tmp_path / "neighbours.npz", index=np.stack([a for a, _ in nbrs]),
                similarity=np.stack([b for _, b in nbrs]),
                sizes=np.array([s for s, _ in subsets]))
    for name, lsm in (("scores.csv", True), ("scores_raw.csv", False)):
        rows = knn.score_model_subsets(shards["test"], shards["train"], y_train, y_test,
                                       sizes=[2, m], repeats=2, seed=0, ks=[3],
                                       log_softmax=lsm, progress=False)
        with open(tmp_path / name, "w", newline="") as f:
            writer = csv.DictWriter(f, list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    keys = ("pairs", "failures", "random", "pcorrect", "per_class", "raw")
    output = {f"{key}_png": str(tmp_path / f"{key}.png") for key in keys}
    output |= {f"{key}_other": [str(tmp_path / f"{key}.pdf")] for key in keys}
    output["numbers"] = str(tmp_path / "numbers.json")
    smk = SimpleNamespace(
        input=SimpleNamespace(data=str(tmp_path / "dataset.npz"),
                              neighbours=str(tmp_path / "neighbours.npz"),
                              per_class=data_out.per_class, arrays=data_out.arrays,
                              scores=str(tmp_path / "scores.csv"),
                              scores_raw=str(tmp_path / "scores_raw.csv")),
        output=SimpleNamespace(**output),
        params=SimpleNamespace(pair_ranks=[5, 12], examples=4, seed=0, dpi=50, k=3,
                               vote="majority"),
        # the config the tables' row counts come from (as in the workflow)
        config={"train": {"seeds": m}, "kernel": {"model_counts": [2, m], "subsets": 2},
                "knn": {"k": [3]}},
        log=[str(tmp_path / "log.txt")], threads=1, rule="figure_neighbours",
    )
    runpy.run_path(str(scripts / "neighbour_figures.py"), init_globals={"snakemake": _Namespace(smk)})
    for key in keys:
        assert (tmp_path / f"{key}.png").stat().st_size > 1000
        assert (tmp_path / f"{key}.pdf").exists()
    data = json.loads((tmp_path / "numbers.json").read_text())
    assert set(data["per_class_accuracy"]) == {"0", "1", "2"}


class _Namespace:
    """Wraps the stand-in so that output[...] and output.x both work, as on Snakemake's objects."""

    def __init__(self, smk):
        self._smk = smk
        self.output = _Items(vars(smk.output))

    def __getattr__(self, name):
        return getattr(self._smk, name)


class _Items(dict):
    def __getattr__(self, name):
        return self[name]


# --------------------------------------------------------------------------- style facts


def _grids(toy):
    """The three neighbour grids, as line plots and as images."""
    t = toy
    labels = {"y_test": t["y_test"], "y_train": t["y_train"]}
    images = {"images_test": t["images_test"], "images_train": t["images_train"]}
    for extra in ({}, images):
        yield nplots.similar_pairs(t["index"], t["similarity"], t["x_test"], t["x_train"],
                                   ranks=(1, 12), **labels, **extra)
        yield nplots.confident_failures(t["index"], t["similarity"], t["y_test"], t["y_train"],
                                        t["x_test"], t["x_train"], rows=4, **extra)
        yield nplots.random_neighbours(t["index"], t["index"][:, ::-1].copy(), t["x_test"],
                                       t["x_train"], examples=6, **labels, **extra)


def test_grid_titles_are_at_least_8_pt_at_the_saved_size(toy, tmp_path):
    from matplotlib.image import imread

    for i, fig in enumerate(_grids(toy)):
        texts = [ax.title for ax in fig.axes if ax.get_title()]
        texts += [ax.yaxis.label for ax in fig.axes if ax.get_ylabel()]
        texts += [t for legend in fig.legends for t in legend.get_texts()]
        assert texts and min(t.get_fontsize() for t in texts) >= 8, i
        # saved as drawn (a tight box, no rescaling): a point is dpi / 72 pixels in the PNG
        box = fig.get_tightbbox(fig.canvas.get_renderer())
        path = tmp_path / f"grid{i}.png"
        nplots.save_figure(fig, [path], dpi=100)
        height, width = imread(path).shape[:2]
        pad = 2 * matplotlib.rcParams["savefig.pad_inches"]
        assert abs(width - 100 * (box.width + pad)) <= 3, (i, width, box.width)
        assert abs(height - 100 * (box.height + pad)) <= 3, (i, height, box.height)


def test_every_colour_in_a_grid_has_a_legend_entry(toy):
    from matplotlib.colors import to_rgba

    for i, fig in enumerate(_grids(toy)):
        explained = {to_rgba(h.get_color()) for legend in fig.legends
                     for h in legend.legend_handles}
        drawn = {to_rgba(line.get_color()) for ax in fig.axes for line in ax.get_lines()}
        drawn |= {to_rgba(ax.title.get_color()) for ax in fig.axes if ax.get_title()}
        drawn -= {to_rgba("black")} if not any(ax.get_lines() for ax in fig.axes) else set()
        assert drawn <= explained, (i, drawn - explained)  # (black titles alone: no legend)
        if i == 1:  # the failures: orange (same label) and red (another label) both drawn
            assert {to_rgba(nplots.TRAIN_COLOR), to_rgba(nplots.WRONG_COLOR)} <= drawn


def test_one_line_style_per_method_across_figures():
    from matplotlib.colors import to_rgba

    from multirun.plots.studies import label_errors_pr
    from multirun.plots.style import METHOD_STYLES

    rows = _rows("kernel", "majority", 3) + _rows("kernel", "weighted", 20) + _rows("ensemble") \
        + _rows("single", base=0.4)
    per_class = {c: _rows("kernel", "majority", 3, base=0.1 + 0.01 * c) for c in range(4)}
    pr = np.array([np.linspace(1, 0.2, 9), np.linspace(0, 1, 9)])
    ap = [{"method": m, "n_models": str(n), "average_precision": str(0.5 + 0.01 * n)}
          for m in ("kernel", "margin") for n in (2, 4, 8)]
    ap += [{"method": "loss", "n_models": "1", "average_precision": str(a)} for a in (0.3, 0.4)]
    figures = {
        "accuracy": nplots.accuracy_vs_models(rows),
        "per_class": nplots.per_class_vs_summed(rows, per_class, vote="majority", k=3),
        "raw": nplots.logsoftmax_vs_raw(rows, _rows("kernel", "majority", 3, base=0.45),
                                        vote="majority", k=3),
        "label_errors": label_errors_pr({"noise": 0.2, "n_models": 8, "pr_kernel": pr,
                                         "pr_margin": pr * 0.9, "pr_loss": pr * 0.8}, ap),
    }
    seen = {}
    for name, fig in figures.items():
        lines = [line for ax in fig.axes for line in ax.get_lines()]
        for line in lines:
            method = line.get_gid()
            if method is None:  # other lines never pass for a method's line
                assert (to_rgba(line.get_color()), line.get_linestyle()) not in {
                    (to_rgba(s["color"]), s["linestyle"]) for s in METHOD_STYLES.values()}, name
                continue
            seen.setdefault(method, set()).add(name)
            assert line.get_linestyle() == METHOD_STYLES[method]["linestyle"], (name, method)
            if method != "kernel":  # the kernel's k-NN series are shades of its red
                assert to_rgba(line.get_color()) == to_rgba(METHOD_STYLES[method]["color"])
        kernel = [line for line in lines if line.get_gid() == "kernel"]
        assert any(to_rgba(line.get_color()) == to_rgba("tab:red") for line in kernel), name
    assert seen["ensemble"] == {"accuracy", "raw", "label_errors"}
    assert seen["single"] == {"accuracy", "label_errors"}
    assert seen["kernel"] == set(figures) and seen["kernel_raw"] == {"raw"}
    assert len({s["linestyle"] for m, s in METHOD_STYLES.items()}) == len(METHOD_STYLES)
