"""The published runs: hub listing and cache, log.pt reading, the 60k set, and the workflow
end to end against the write-up's own evaluation code.

The hub client is the real one (huggingface_hub): offline against a cache laid out as it lays
it out, or online against a local HTTP server answering the hub's tree API. The log.pt files
have the published keys and dtypes at a small size; logits.npy is the 60k set's layout.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest
import torch
from conftest import csv_rows, snakemake, tiny_config, write_config

from multirun import data, knn, published
from multirun.config import ConfigError
from multirun.contracts import ContractError

COMMIT = "0123456789abcdef0123456789abcdef01234567"
MAIN = "logs_saveoutputs_main"


def _snapshot(root, repo_id):
    repo = root / f"datasets--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return repo / "snapshots" / COMMIT


def _log(labels_train, labels_test, models, seed, *, ties=()):
    """A log.pt dict whose accuracies mean something: each model's logits lean to the label
    and share a random per-(model, class) offset across the examples of a class (what makes
    same-class examples correlate across models, so the kernel's k-NN beats chance), plus noise.

    ``ties``: test examples whose class-0 and label logits differ by less than fp16 can
    hold in their mean (the write-up's fp16 mean calls class 0, a float32 sum the label).
    """
    g = torch.Generator().manual_seed(seed)
    offset = torch.randn(models, 10, 10, generator=g)

    def logits(labels, noise):
        labels = torch.as_tensor(labels)
        x = noise * torch.randn(models, len(labels), 10, generator=g) + offset[:, labels]
        x[:, torch.arange(len(labels)), labels] += 1.0
        return x

    test = logits(labels_test, 3.0)
    for i in ties:  # class 0 and the label at 4.0; a quarter of the models add fp16's step
        test[:, i] = 0.5 * torch.randn(models, 10, generator=g) - 2.0  # (4.0 + 2^-8) to the label:
        test[:, i, 0] = 4.0                                            # the mean is 4 + ~2^-10,
        test[:, i, int(labels_test[i])] = 4.0                          # 4.0 once rounded to fp16
        test[: models // 4, i, int(labels_test[i])] = 4.0 + 2.0 ** -8
    return {"logits": test.half(), "logits_tta": logits(labels_test, 3.0).half(),
            "logits_train": logits(labels_train, 3.0).half(),
            "accs": torch.rand(models, generator=g), "code": "# training code\n" * 3}


def _hub_cache(root, files, labels_train, labels_test, models=3):
    snap = _snapshot(root, published.REPO)
    objs = {}
    for i, name in enumerate(files):
        target = snap / name
        target.parent.mkdir(parents=True, exist_ok=True)
        objs[name] = _log(labels_train, labels_test, models, seed=i)
        torch.save(objs[name], target)
    return objs


def _tiny_labels(cfg):
    ds = data.make_mnist1d(seed=cfg["dataset"]["seed"], num_samples=cfg["dataset"]["num_samples"])
    return ds["y_train"], ds["y_test"]


# --------------------------------------------------------------------------- names and listing


LISTING = [f"{MAIN}/{u}/log.pt" for u in ("b2", "a1", "c3")] + [
    "logs_saveoutputs_other/x9/log.pt", "logs_saveoutputs_other/x9/notes.txt", "README.md"]


def test_match_files_expands_folders_and_patterns_in_hub_order():
    assert published.match_files([f"{MAIN}/*/log.pt"], LISTING) == [
        f"{MAIN}/a1/log.pt", f"{MAIN}/b2/log.pt", f"{MAIN}/c3/log.pt"]
    assert published.match_files(["logs_saveoutputs_other/"], LISTING) == [
        "logs_saveoutputs_other/x9/log.pt"]
    # a name passes through; repeats are dropped; '*' does not cross '/'
    assert published.match_files([f"{MAIN}/b2/log.pt", f"{MAIN}/*/log.pt"], LISTING)[:2] == [
        f"{MAIN}/b2/log.pt", f"{MAIN}/a1/log.pt"]
    assert published.match_files(["*/log.pt", "logs_*/*/log.pt"], LISTING + ["top/log.pt"]) == [
        "top/log.pt", f"{MAIN}/a1/log.pt", f"{MAIN}/b2/log.pt", f"{MAIN}/c3/log.pt",
        "logs_saveoutputs_other/x9/log.pt"]
    with pytest.raises(ConfigError, match=r"published.files: 'logs_x/\*/log.pt' matches no file.*"
                                          r"logs_saveoutputs_other"):
        published.match_files(["logs_x/*/log.pt"], LISTING)


class _Hub(BaseHTTPRequestHandler):
    """The hub's tree API (GET /api/datasets/OWNER/NAME/tree/REV?recursive=...) for LISTING."""

    calls: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        _Hub.calls.append(self.path)
        if not self.path.startswith(f"/api/datasets/{published.REPO}/tree/"):
            self.send_response(404)
            self.end_headers()
            return
        body = json.dumps([{"type": "file", "path": p, "size": 10, "oid": "0" * 40}
                           for p in LISTING]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def hub_server():
    server = HTTPServer(("127.0.0.1", 0), _Hub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Hub.calls.clear()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_listing_comes_from_the_hub_once_then_from_the_cache(tmp_path, hub_server):
    import huggingface_hub

    api = huggingface_hub.HfApi(endpoint=hub_server)
    cache = tmp_path / "listing.json"
    cfg = {"repo_id": published.REPO, "files": [f"{MAIN}/*/log.pt"]}
    assert published.list_repo(published.REPO, None, cache, api=api) == sorted(LISTING)
    assert len(_Hub.calls) == 1 and "/tree/main" in _Hub.calls[0]
    # the cache answers now: a dead endpoint is never asked
    dead = huggingface_hub.HfApi(endpoint="http://127.0.0.1:9")
    assert published.list_repo(published.REPO, None, cache, api=dead) == sorted(LISTING)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "listing-kjj0--cifar10-multirun-logits-main.json").write_text(cache.read_text())
    assert published.resolve(cfg, tmp_path / "c") == [f"{MAIN}/a1/log.pt", f"{MAIN}/b2/log.pt",
                                                      f"{MAIN}/c3/log.pt"]
    assert published.folders(sorted(LISTING)) == {MAIN: 3, "logs_saveoutputs_other": 1}
    # names only: no listing is needed at all
    assert published.resolve({"repo_id": published.REPO, "files": ["a/log.pt"]}, tmp_path / "none") \
        == ["a/log.pt"]
    assert not (tmp_path / "none").exists()


def test_the_listing_command_writes_where_a_preset_reads(tmp_path, capsys, monkeypatch):
    """python -m multirun.published --results DIR: the listing at DIR/published/, the path
    that a run with `results: DIR` resolves its patterns from; offline, one message."""
    results = tmp_path / "results" / "published-all"
    cache = results / "published" / "listing-kjj0--cifar10-multirun-logits-main.json"
    cache.parent.mkdir(parents=True)
    cache.write_text(json.dumps({"repo_id": published.REPO, "revision": None,
                                 "files": sorted(LISTING)}))
    assert published.main(["--results", str(results)]) == 0
    assert f"{MAIN}/*/log.pt\t3 files, 1500 runs" in capsys.readouterr().out
    cfg = {"repo_id": published.REPO, "files": [f"{MAIN}/*/log.pt"]}
    assert len(published.resolve(cfg, results / "published")) == 3  # what the run reads
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert published.main(["--results", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("multirun error: config key published.files:") and "Traceback" not in err


# --------------------------------------------------------------------------- log.pt


def test_read_log_is_weights_only_mapped_and_picks_the_test_logits(tmp_path):
    y_train, y_test = np.arange(12) % 10, np.arange(5) % 10
    obj = _log(y_train, y_test, models=3, seed=0)
    torch.save(obj, tmp_path / "log.pt")
    out = published.read_log(tmp_path / "log.pt", num_train=12, num_test=5)
    assert out["mapped"] and out["train"].shape == (3, 12, 10)
    assert torch.equal(out["test"], obj["logits"])
    tta = published.read_log(tmp_path / "log.pt", test_key="logits_tta")
    assert torch.equal(tta["test"], obj["logits_tta"]) and not torch.equal(tta["test"], out["test"])
    with pytest.raises(ContractError, match="log.pt: logits cover 12 train / 5 test"):
        published.read_log(tmp_path / "log.pt", num_train=50000, num_test=10000)
    with pytest.raises(ConfigError, match="published.test_logits"):
        published.read_log(tmp_path / "log.pt", test_key="logits_train")
    torch.save({"logits": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ContractError, match="bad.pt: lacks tensor 'logits_train'"):
        published.read_log(tmp_path / "bad.pt")
    # torch's legacy (non-zip) format cannot be mapped: read whole, same values
    torch.save(obj, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    legacy = published.read_log(tmp_path / "legacy.pt")
    assert not legacy["mapped"] and torch.equal(legacy["train"], obj["logits_train"])


class _Payload:
    """A pickle that would run code on load (what weights_only refuses)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_log_pt_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"logits": torch.zeros(2, 3, 10).half(), "evil": _Payload(marker)}, tmp_path / "x.pt")
    with pytest.raises(ContractError, match=r"x.pt: holds pickled objects other than tensors.*"
                       r"could run code.*open.*refused, nothing in it ran; delete it"):
        published.read_log(tmp_path / "x.pt")
    assert not marker.exists()


def test_the_real_layout_is_read_weights_only(tmp_path):
    """The hub's log.pt holds the logits as fp16 tensors, ``accs`` (a tensor of per-run
    accuracies; a list of floats also reads) and ``code``, the training script as a str
    (``open(sys.argv[0]).read()``): all types that load_log's weights_only load reads."""
    obj = _log(np.arange(6) % 10, np.arange(4) % 10, models=2, seed=3)
    for accs in (obj["accs"], [float(a) for a in obj["accs"]]):
        torch.save({**obj, "accs": accs}, tmp_path / "log.pt")
        back, mapped = published.load_log(tmp_path / "log.pt")
        assert mapped and set(back) == {"accs", "code", "logits", "logits_tta", "logits_train"}
        assert isinstance(back["code"], str) and back["code"] == obj["code"]
        assert type(back["accs"]) is type(accs) and back["logits"].dtype == torch.float16


def test_write_shard_streams_chunks_and_names_bad_values(tmp_path):
    y_train, y_test = np.arange(12) % 10, np.arange(5) % 10
    obj = _log(y_train, y_test, models=7, seed=1)
    torch.save(obj, tmp_path / "log.pt")
    src = published.read_log(tmp_path / "log.pt")
    published.write_shard(tmp_path / "train.npy", src["train"], mapped=True, source="log.pt", chunk=3)
    out = np.load(tmp_path / "train.npy", mmap_mode="r")
    assert out.dtype == np.float16 and out.shape == (7, 12, 10)
    np.testing.assert_array_equal(out, obj["logits_train"].numpy())
    # the pages were dropped, not the data: the mapped tensor still reads the file
    assert torch.equal(src["train"], obj["logits_train"])
    bad = obj["logits_train"].clone()
    bad[5, 2, 1] = float("nan")
    with pytest.raises(ContractError, match=r"SRC: logits hold NaN or inf \(models 3..5\)"):
        published.write_shard(tmp_path / "bad.npy", bad, mapped=False, source="SRC", chunk=3)
    assert not (tmp_path / "bad.npy").exists()


def test_download_names_the_file_and_what_to_do(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read when huggingface_hub is imported, and an
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # earlier test may
    # have imported it: without this, the missing file below was asked of the network (20 s)
    snap = _snapshot(tmp_path, published.REPO)
    (snap / "a").mkdir(parents=True)
    torch.save(_log(np.arange(4), np.arange(2), 2, 0), snap / "a" / "log.pt")
    path = published.download("a/log.pt", cache_dir=str(tmp_path))
    assert published.read_log(path, num_train=4, num_test=2)["test"].shape == (2, 2, 10)
    with pytest.raises(ContractError, match="missing/log.pt: download failed.*published.files"):
        published.download("missing/log.pt", cache_dir=str(tmp_path))


# --------------------------------------------------------------------------- ensembles


def test_fp16_ensemble_mean_is_torch_mean_of_the_fp16_tensor(tmp_path, monkeypatch):
    from multirun.kernel import ShardedLogits

    g = torch.Generator().manual_seed(0)
    x = (3 * torch.randn(37, 4000, 10, generator=g)).half()
    x[:, :300, 1] = x[:, :300, 0]  # exact ties
    x[:19, 300:600, 3] = x[:19, 300:600, 2] + 0.001  # below fp16's step in the mean
    reference = x.mean(0).argmax(1).numpy()  # the write-up's ensemble
    np.testing.assert_array_equal(knn.ensemble_predict(x.numpy(), "fp16"), reference)
    # blocks of 333 examples, models gathered in chunks across two uneven shards
    np.save(tmp_path / "a.npy", x[:5].numpy())
    np.save(tmp_path / "b.npy", x[5:].numpy())
    monkeypatch.setattr(knn, "ROW_BLOCK_BYTES", 2 * 37 * 10 * 333)
    monkeypatch.setattr(knn, "CHUNK", 8)
    sharded = ShardedLogits([tmp_path / "a.npy", tmp_path / "b.npy"])
    np.testing.assert_array_equal(knn.ensemble_predict(sharded, "fp16"), reference)
    fp32 = knn.ensemble_predict(x.numpy(), "fp32")
    assert 0 < (fp32 != reference).sum() <= 300  # fp32 resolves the near-ties that fp16 merged
    with pytest.raises(ContractError, match="knn.ensemble_mean"):
        knn.ensemble_predict(x.numpy(), "bf16")


def test_confidence_intervals():
    lo, hi = knn.wilson(0.95, 10000)
    # Wilson's interval written out: (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)
    z, n, p = 1.959963984540054, 10000, 0.95
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert lo == pytest.approx((p + z * z / (2 * n) - half) / (1 + z * z / n), abs=1e-15)
    assert hi == pytest.approx((p + z * z / (2 * n) + half) / (1 + z * z / n), abs=1e-15)
    rows = [{"n_models": 4, "method": "ensemble", "k": "", "vote": "", "accuracy": a}
            for a in (0.90, 0.92, 0.91)]
    rows.append({"n_models": 8, "method": "ensemble", "k": "", "vote": "", "accuracy": 0.95,
                 "ci_low": lo, "ci_high": hi})
    sizes, mean, low, high = knn.curve_ci(rows, method="ensemble")
    assert sizes.tolist() == [4, 8] and mean[0] == pytest.approx(0.91)
    # t(0.975, 2) = 4.302653; sd of (0.90, 0.92, 0.91) = 0.01
    assert high[0] - mean[0] == pytest.approx(4.302653 * 0.01 / np.sqrt(3), rel=1e-6)
    assert (low[1], high[1]) == (lo, hi)


# --------------------------------------------------------------------------- workflow


def _writeup_numbers(obj, labels_train, labels_test, k=3):
    """The write-up's evaluation code (seeds/ensemble-kernel-README.md), on the CPU."""
    labels_train, labels_test = torch.tensor(labels_train), torch.tensor(labels_test)

    def normalize(logits):
        logits = logits.float()
        logits = logits.log_softmax(-1)
        logits = (logits - logits.mean(0, keepdim=True)) / logits.std(0, keepdim=True)
        return logits

    def compute_kernel(logits1, logits2):
        logits1 = normalize(logits1)
        logits2 = normalize(logits2)
        kernel = torch.zeros(logits1.shape[1], logits2.shape[1])
        for c in range(10):
            corr_cls = (logits1[..., c].T @ logits2[..., c]) / len(logits1)
            kernel += corr_cls / 10
        return kernel

    each_acc = (obj["logits"].argmax(-1) == labels_test).float().mean(1)
    single = "%.2f" % (100 * each_acc.mean())
    ens_pred = obj["logits"].mean(0).argmax(1)
    ensemble = "%.2f" % (100 * (ens_pred == labels_test).float().mean())
    kernel = compute_kernel(obj["logits"], obj["logits_train"])
    nbrs = kernel.topk(k, dim=1)
    pred = labels_train[nbrs.indices].mode(1).values
    return single, ensemble, "%.2f" % (100 * (pred == labels_test).float().mean())


pytestmark_workflow = pytest.mark.workflow


@pytestmark_workflow
def test_published_runs_reproduce_the_writeup_code_to_the_last_digit(tmp_path):
    """Patterns through a cached listing, offline; single, ensemble (fp16 mean) and kernel
    3-NN equal what the write-up's code prints on the same file; logits_tta switch."""
    cfg = tiny_config()
    y_train, y_test = _tiny_labels(cfg)
    hub = tmp_path / "hub"
    names = [f"{MAIN}/aaaa/log.pt", f"{MAIN}/bbbb/log.pt"]
    snap = _snapshot(hub, published.REPO)
    (snap / names[0]).parent.mkdir(parents=True)
    (snap / names[1]).parent.mkdir(parents=True)
    models = 41
    ties = [i for i in range(len(y_test)) if y_test[i] > 0][:3]  # fp16 says class 0, fp32 the label
    first = _log(y_train, y_test, models, seed=0, ties=ties)
    torch.save(first, snap / names[0])
    torch.save(_log(y_train, y_test, models, seed=1), snap / names[1])

    cfg["published"] = {"repo_id": published.REPO, "files": [f"{MAIN}/*/log.pt"]}
    cfg["kernel"].update(model_counts=[2, 8, models, 2 * models], subsets=3)
    cfg["knn"]["ensemble_mean"] = "fp16"
    workdir = tmp_path / "run"
    workdir.mkdir()
    write_config(workdir, cfg)
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub)}
    # offline with a pattern and no listing yet: one message saying what to do
    proc = snakemake(workdir, "--dry-run", check=False, env=env)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "published.files: listing the files of kjj0/cifar10-multirun-logits" in out
    assert "connect to the network" in out
    # the listing as list_repo caches it (tested above against the hub's API): now offline works
    listing = workdir / "results" / "published" / "listing-kjj0--cifar10-multirun-logits-main.json"
    listing.parent.mkdir(parents=True)
    listing.write_text(json.dumps({"repo_id": published.REPO, "revision": None,
                                   "files": [*names, "README.md"]}))
    snakemake(workdir, env=env)
    res = workdir / "results"
    assert np.load(res / "logits" / "shard-001" / "seeds.npy").tolist() == list(range(41, 82))
    np.testing.assert_array_equal(np.load(res / "logits" / "shard-000" / "test.npy"),
                                  first["logits"].numpy())
    rows = csv_rows(res / "knn" / "logsoftmax" / "scores.csv")
    assert {int(r["n_models"]) for r in rows} == {2, 8, 41, 82}
    assert sum(r["method"] == "ensemble" and r["n_models"] == "8" for r in rows) == 3
    for r in rows:
        assert float(r["ci_low"]) <= float(r["accuracy"]) <= float(r["ci_high"])
    # the mean single model's interval is the author's: mean +- 1.96 std / sqrt(n) over models
    each = (first["logits"].argmax(-1) == torch.as_tensor(y_test)).double().mean(1)
    one = next(r for r in rows if r["n_models"] == "82" and r["method"] == "single")
    second = torch.load(snap / names[1], weights_only=True)["logits"]
    each = torch.cat([each, (second.argmax(-1) == torch.as_tensor(y_test)).double().mean(1)])
    assert float(one["ci_high"]) == pytest.approx(
        float(each.mean() + 1.96 * each.std() / len(each) ** 0.5), abs=1e-4)

    # subset 0 of size 41 is a random draw; the write-up's code runs on the first file, so
    # score the first file's models exactly as the workflow does (same files, same code path)
    from multirun import kernel

    test = kernel.ShardedLogits([res / "logits" / "shard-000" / "test.npy"])
    train = kernel.ShardedLogits([res / "logits" / "shard-000" / "train.npy"])
    index, sim = kernel.neighbours(test, train, k=5, chunk_models=7, block=16, progress=False)
    ours = {r["method"] + r["vote"] + str(r["k"]): "%.2f" % (100 * r["accuracy"]) for r in
            knn.score_subset(index, sim, test, y_train, y_test, ks=[3], votes=["majority"],
                             ensemble_mean="fp16")}
    single, ensemble, kernel3 = _writeup_numbers(first, y_train, y_test)
    assert 10 < float(single) < float(ensemble) < 95 and 30 < float(kernel3) < 100  # not trivial
    assert (ours["single"], ours["ensemble"], ours["kernelmajority3"]) == (single, ensemble, kernel3)
    fp32 = knn.ensemble_predict(test, "fp32")
    assert (fp32 != first["logits"].mean(0).argmax(1).numpy()).sum() == len(ties)

    # the full set of 82 models in the workflow's scores against the write-up's code on both
    both = {k: torch.cat([first[k], torch.load(snap / names[1], weights_only=True)[k]])
            for k in ("logits", "logits_train")}
    full = {r["method"] + r["vote"] + r["k"]: "%.2f" % (100 * float(r["accuracy"]))
            for r in rows if r["n_models"] == "82"}
    assert (full["single"], full["ensemble"], full["kernelmajority3"]) == \
        _writeup_numbers(both, y_train, y_test)
    assert (res / "figures" / "accuracy_vs_models.png").exists()

    # logits_tta: the test shards change, nothing is trained
    cfg["published"]["test_logits"] = "logits_tta"
    write_config(workdir, cfg)
    snakemake(workdir, env=env)
    np.testing.assert_array_equal(np.load(res / "logits" / "shard-000" / "test.npy"),
                                  first["logits_tta"].numpy())
    assert not (res / "train").exists()


@pytestmark_workflow
def test_missing_hub_file_is_named(tmp_path):
    cfg = tiny_config()
    cfg["published"] = {"repo_id": published.REPO, "files": ["nowhere/log.pt"]}
    cfg["kernel"]["model_counts"] = [2]
    _snapshot(tmp_path / "hub", published.REPO).mkdir(parents=True)
    workdir = tmp_path / "run"
    workdir.mkdir()
    write_config(workdir, cfg)
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    proc = snakemake(workdir, check=False, env=env)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "nowhere/log.pt: download failed" in out and "Traceback" not in out
    assert not (workdir / "results" / "logits" / "shard-000" / "test.npy").exists()


@pytestmark_workflow
def test_60k_set_is_streamed_in_place(tmp_path):
    """logits.npy of the 60k layout: ensemble / single accuracy vs models up to all of them,
    test-to-test neighbours (never self), the pairs figure; the array is never copied."""
    cfg = tiny_config()
    _, y_test = _tiny_labels(cfg)
    hub = tmp_path / "hub"
    snap = _snapshot(hub, published.REPO_60K)
    snap.mkdir(parents=True)
    models = 37
    g = torch.Generator().manual_seed(3)
    logits = 3 * torch.randn(models, len(y_test), 10, generator=g)
    logits[:, torch.arange(len(y_test)), torch.as_tensor(y_test)] += 2.0
    logits[:, 7] = logits[:, 3]  # a duplicate within the test set
    logits = logits.half()
    np.save(snap / "logits.npy", logits.numpy())
    np.save(snap / "labels.npy", y_test.astype(np.int64))
    cfg["published"] = {"repo_id": published.REPO_60K, "files": ["logits.npy"]}
    cfg["kernel"].update(model_counts=[2, 4, 16, models], subsets=2, k_max=5)
    cfg["knn"]["ensemble_mean"] = "fp16"
    workdir = tmp_path / "run"
    workdir.mkdir()
    write_config(workdir, cfg)
    snakemake(workdir, env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub)})
    res = workdir / "results"
    pointer = json.loads((res / "published" / "arrays.json").read_text())
    assert pointer["shape"] == [models, len(y_test), 10]
    assert not list(res.rglob("*.npy"))  # read in place from the hub cache
    rows = csv_rows(res / "knn" / "logsoftmax" / "scores.csv")
    full = {r["method"]: r["accuracy"] for r in rows if r["n_models"] == str(models)}
    # the 60k README's evaluation: per-model accuracy; the ensemble of all models
    labels = torch.as_tensor(y_test)
    assert float(full["single"]) == pytest.approx(
        float((logits.argmax(-1) == labels).double().mean(1).mean()), abs=1e-12)
    assert float(full["ensemble"]) == float((logits.mean(0).argmax(1) == labels).double().mean())
    assert sum(r["n_models"] == "4" for r in rows) == 4  # 2 subsets x (ensemble, single)
    nb = np.load(res / "kernel" / "logsoftmax" / "test_neighbours.npz")
    index = nb["index"][0]
    assert nb["sizes"].tolist() == [models]
    assert not (index == np.arange(len(y_test))[:, None]).any()
    assert index[3, 0] == 7 and index[7, 0] == 3
    # identical columns: sum z^2 / M with the unbiased std across models = (M - 1) / M
    assert nb["similarity"][0][3, 0] == pytest.approx((models - 1) / models, abs=1e-5)
    assert (res / "figures" / "test_pairs.png").exists()
    assert (res / "figures" / "accuracy_vs_models.png").exists()
    # check reads every intermediate; this run has no dataset to take the classes from
    proc = snakemake(workdir, "check", env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub)})
    log = (res / "logs" / "check.log").read_text()
    assert "intermediates of the default targets meet their contracts" in log, proc.stdout
