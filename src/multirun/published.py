"""The published runs of the ensemble-kernel write-up, read from the Hugging Face hub.

Two hub datasets:

* ``kjj0/cifar10-multirun-logits``: one ``log.pt`` per 500 runs, in folders per training
  configuration (``logs_saveoutputs_main/<uuid>/log.pt``: the write-up's configuration,
  40 files = 20,000 runs). Each file is a torch zip archive holding ``logits`` (M, 10000, 10)
  fp16 test logits, ``logits_tta`` (same shape, test-time-augmented), ``logits_train``
  (M, 50000, 10) fp16, ``accs`` (M,) and ``code`` (the training script, a str).
* ``kjj0/cifar10-multirun-logits-60k``: ``logits.npy`` fp16 (61565, 10000, 10) test logits
  only (12 GB) and ``labels.npy`` (10000,). Read as one memory-mapped logit shard: nothing
  is copied.

``published.files`` entries are file names, folders (every ``log.pt`` below) or glob patterns
(``*``, ``?``, ``[..]`` within one path segment). Folders and patterns are resolved against the
hub's file listing once; the listing is cached in a JSON file so later runs work offline.
"""

from __future__ import annotations

import contextlib
import ctypes
import fnmatch
import json
import mmap
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where used: the Snakefile resolves files without it
    import torch

from multirun.config import ConfigError
from multirun.contracts import ContractError, atomic_path, refused_pickle, remake, save_json

REPO = "kjj0/cifar10-multirun-logits"
REPO_60K = "kjj0/cifar10-multirun-logits-60k"
TEST_KEYS = ("logits", "logits_tta")
GLOB = set("*?[")
CHUNK = 50  # models copied per step when writing a shard (bounds resident memory)


# --------------------------------------------------------------------------- file names


def _is_glob(entry: str) -> bool:
    return bool(GLOB & set(entry))


def _is_file(entry: str) -> bool:
    return not _is_glob(entry) and entry.endswith((".pt", ".npy"))


def _segment_match(name: str, pattern: str) -> bool:
    """Glob match segment by segment (``*`` never crosses a ``/``)."""
    parts, pats = name.split("/"), pattern.split("/")
    return len(parts) == len(pats) and all(
        fnmatch.fnmatchcase(p, q) for p, q in zip(parts, pats, strict=True))


def match_files(entries: list[str], listing: list[str], repo_id: str = REPO) -> list[str]:
    """Expand folders and glob patterns of ``entries`` against the hub ``listing``.

    File names pass through unchanged; a folder stands for every ``log.pt`` below it; a
    pattern for the listed files it matches, sorted. Order of first appearance, no repeats.
    Raises :class:`ConfigError` for an entry that matches nothing.
    """
    out: list[str] = []
    for raw in entries:
        entry = raw.strip("/")
        if _is_file(entry):
            hits = [entry]
        elif _is_glob(entry):
            hits = sorted(f for f in listing if _segment_match(f, entry))
        else:
            hits = sorted(f for f in listing if f.startswith(entry + "/") and f.endswith("/log.pt"))
        if not hits:
            folders = sorted({f.split("/")[0] for f in listing if "/" in f})
            raise ConfigError(f"config key published.files: {raw!r} matches no file of {repo_id} "
                              f"(its top-level folders: {folders}); fix the name or pattern")
        out += [h for h in hits if h not in out]
    return out


def list_repo(repo_id: str, revision: str | None, cache: str | os.PathLike, api=None) -> list[str]:
    """The hub dataset's file names: from ``cache`` (JSON) if present, else listed and cached.

    Delete ``cache`` to list again (e.g. after the dataset gained files). ``api``: a
    ``huggingface_hub.HfApi`` (default: one for the configured endpoint).
    """
    cache = Path(cache)
    if cache.exists():
        try:
            saved = json.loads(cache.read_text())
            if saved["repo_id"] == repo_id and saved["revision"] == revision:
                return list(saved["files"])
        except (ValueError, KeyError, TypeError):
            pass  # unreadable or another repo: list again
    import huggingface_hub

    try:
        api = api or huggingface_hub.HfApi()
        files = api.list_repo_files(repo_id, repo_type="dataset", revision=revision)
    except Exception as err:  # offline mode, network, unknown repo
        raise ConfigError(
            f"config key published.files: listing the files of {repo_id} on the hub failed "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); folders and "
            "patterns need the listing once: connect to the network (unset HF_HUB_OFFLINE), or "
            f"name the files one by one; the listing is then kept in {cache}") from None
    save_json(cache, {"repo_id": repo_id, "revision": revision, "files": sorted(files)})
    return sorted(files)


def resolve(published: dict, cache_dir: str | os.PathLike) -> list[str]:
    """The hub file names of config section ``published`` (folders and patterns expanded).

    Only lists the hub when some entry is a folder or pattern; the listing is cached in
    ``cache_dir/listing-<owner>--<name>-<revision>.json``.
    """
    entries = list(published["files"])
    if all(_is_file(e.strip("/")) for e in entries):
        return match_files(entries, [], published["repo_id"])
    repo_id, revision = published["repo_id"], published.get("revision")
    cache = Path(cache_dir) / f"listing-{repo_id.replace('/', '--')}-{revision or 'main'}.json"
    return match_files(entries, list_repo(repo_id, revision, cache), repo_id)


def download(filename: str, *, repo_id: str = REPO, revision: str | None = None,
             cache_dir: str | None = None) -> Path:
    """Fetch one file of a hub dataset with ``huggingface_hub`` (kept in its cache).

    A failure (network, offline mode without the file cached, wrong name) is one
    :class:`ContractError` naming the file and what to do.
    """
    import huggingface_hub

    try:
        path = huggingface_hub.hf_hub_download(repo_id, filename, repo_type="dataset",
                                               revision=revision, cache_dir=cache_dir)
    except Exception as err:  # network errors, missing files, offline mode
        first = str(err).splitlines()[0] if str(err) else ""
        raise ContractError(
            f"hub file {repo_id}/{filename}: download failed ({type(err).__name__}: {first}); "
            "check the name in published.files and the network (HF_HUB_OFFLINE=1 needs the "
            "file in the hub cache already)") from None
    return Path(path)


# --------------------------------------------------------------------------- log.pt


def load_log(path: str | os.PathLike) -> tuple[dict, bool]:
    """``torch.load`` a log.pt safely: ``weights_only`` (no code runs), memory-mapped.

    Returns the dict and whether its tensors are file-backed (mmap) rather than in memory
    (archives in torch's legacy format cannot be mapped and are read whole).
    """
    import torch

    path = Path(path)
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True), True
        except RuntimeError as err:
            if "mmap" not in str(err) and "zip" not in str(err):
                raise
            return torch.load(path, map_location="cpu", weights_only=True), False
    except Exception as err:
        refused = refused_pickle(path, err, "delete it; the hub's log.pt files hold only "
                                 "tensors, strings and numbers")
        if refused is not None:
            raise refused from None
        first = str(err).splitlines()[0] if str(err) else ""
        raise ContractError(f"{path}: cannot be loaded as a log.pt of {REPO} "
                            f"({type(err).__name__}: {first}); delete it to fetch it again") from None


def read_log(path: str | os.PathLike, *, test_key: str = "logits", num_train: int | None = None,
             num_test: int | None = None) -> dict:
    """Check one published log.pt and return its logits without reading them.

    Returns ``train`` (M, num_train, C) and ``test`` (M, num_test, C) torch tensors
    (memory-mapped when the file allows) plus ``mapped`` (bool). ``test_key``: ``logits``
    (plain test logits) or ``logits_tta`` (test-time-augmented).
    """
    import torch

    if test_key not in TEST_KEYS:
        raise ConfigError(f"config key published.test_logits: {test_key!r} is not one of {TEST_KEYS}")
    obj, mapped = load_log(path)
    for key in (test_key, "logits_train"):
        if not isinstance(obj, dict) or key not in obj or not torch.is_tensor(obj[key]):
            raise ContractError(f"{path}: lacks tensor {key!r}; is it a log.pt of {REPO}?")
    test, train = obj[test_key], obj["logits_train"]
    if test.ndim != 3 or train.ndim != 3 or test.shape[0] != train.shape[0] \
            or test.shape[2] != train.shape[2] or not test.is_floating_point():
        raise ContractError(f"{path}: {test_key} {tuple(test.shape)} {test.dtype} and logits_train "
                            f"{tuple(train.shape)} do not agree as float (models, examples, classes)")
    if (num_test is not None and test.shape[1] != num_test) or \
            (num_train is not None and train.shape[1] != num_train):
        raise ContractError(f"{path}: logits cover {train.shape[1]} train / {test.shape[1]} test "
                            f"examples, the dataset has {num_train} / {num_test}")
    return {"train": train, "test": test, "mapped": mapped}


def _drop_pages(t: torch.Tensor) -> None:
    """Unmap the resident pages of a file-backed (mmap) tensor once it has been copied.

    They stay in the page cache; without this every page read counts in the job's RSS
    until exit (a 700 MB log.pt would add 700 MB). Only for file-backed tensors.
    """
    page = mmap.PAGESIZE
    start = -(-t.data_ptr() // page) * page
    stop = (t.data_ptr() + t.nbytes) // page * page
    if stop > start and hasattr(mmap, "MADV_DONTNEED"):
        libc = ctypes.CDLL(None, use_errno=True)
        with contextlib.suppress(AttributeError, OSError):
            libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(stop - start),
                         ctypes.c_int(mmap.MADV_DONTNEED))


def write_shard(path: str | os.PathLike, logits: torch.Tensor, *, mapped: bool, source: str,
                chunk: int = CHUNK) -> None:
    """Write (M, N, C) logits as a float16 ``.npy`` atomically, ``chunk`` models at a time.

    Never holds more than one chunk in memory (file-backed pages are released after each).
    NaN or inf -> :class:`ContractError` naming ``source``.
    """
    import torch

    shape = tuple(int(s) for s in logits.shape)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": np.dtype(np.float16).str, "fortran_order": False, "shape": shape})
        for start in range(0, shape[0], chunk):
            part = logits[start : start + chunk]
            block = part.to(torch.float16).numpy()
            if not np.isfinite(block).all():
                raise ContractError(f"{source}: logits hold NaN or inf (models {start}.."
                                    f"{start + len(block) - 1})")
            f.write(block.tobytes())
            del block
            if mapped:
                _drop_pages(part)


def dataset_labels(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Only ``y_train`` and ``y_test`` of a dataset ``.npz`` (not the images)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: np.asarray(f[k]) for k in ("y_train", "y_test")}
    except Exception as err:
        raise ContractError(f"{path}: cannot read y_train/y_test ({type(err).__name__}: {err}); "
                            f"{remake(path)}") from None


# --------------------------------------------------------------------------- the 60k set


def open_60k(logits_path: str | os.PathLike, labels_path: str | os.PathLike):
    """The 60k set as a :class:`multirun.kernel.ShardedLogits` (one memory-mapped shard)
    and its labels (N,) int64. Checks the header: fp16 (M, N, C), labels (N,) in [0, C).
    """
    from multirun.kernel import ShardedLogits

    logits = ShardedLogits([logits_path])
    labels = np.load(labels_path, allow_pickle=False)
    if labels.ndim != 1 or len(labels) != logits.num_examples or labels.dtype.kind not in "iu" \
            or labels.min() < 0 or labels.max() >= logits.num_classes:
        raise ContractError(f"{labels_path}: expected ({logits.num_examples},) integer labels in "
                            f"[0, {logits.num_classes}), got {labels.shape} {labels.dtype}")
    return logits, labels.astype(np.int64)


def fetch_60k(files: list[str], *, repo_id: str = REPO_60K, revision: str | None = None) -> dict:
    """Download the 60k set's ``logits.npy`` and its sibling ``labels.npy`` into the hub
    cache (nothing is copied) and check them; returns the pointer the workflow stores:
    ``logits``, ``labels`` (absolute paths) and ``shape``.
    """
    if len(files) != 1:
        raise ConfigError(f"config key published.files: the {repo_id} set is one logits.npy, got "
                          f"{files}")
    name = files[0]
    labels_name = str(Path(name).parent / "labels.npy") if "/" in name else "labels.npy"
    paths = [download(f, repo_id=repo_id, revision=revision) for f in (name, labels_name)]
    logits, _ = open_60k(*paths)
    return {"logits": str(paths[0].resolve()), "labels": str(paths[1].resolve()),
            "shape": [logits.num_models, logits.num_examples, logits.num_classes]}


def load_pointer(path: str | os.PathLike):
    """The 60k set named by a pointer of :func:`fetch_60k`: (ShardedLogits, labels (N,))."""
    try:
        pointer = json.loads(Path(path).read_text())
        files = pointer["logits"], pointer["labels"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ContractError(f"{path}: unreadable ({err}); {remake(path)}") from None
    for f in files:
        if not Path(f).exists():
            raise ContractError(f"{path}: names {f}, which is gone (hub cache cleared?); delete "
                                f"{path} and rerun to fetch it again")
    return open_60k(*files)


def folders(listing: list[str]) -> dict[str, int]:
    """Number of ``log.pt`` files (500 runs each) per top-level folder of a listing."""
    out: dict[str, int] = {}
    for f in listing:
        if f.endswith("/log.pt"):
            out[f.split("/")[0]] = out.get(f.split("/")[0], 0) + 1
    return dict(sorted(out.items()))


def main(argv: list[str] | None = None) -> int:
    """``python -m multirun.published [--results DIR]``: the hub's training configurations
    (folders of ``log.pt``) with their file counts, from the listing that a run with
    ``results: DIR`` reads (``DIR/published/listing-...json``, made when missing)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m multirun.published", description=main.__doc__)
    parser.add_argument("--results", default="results/published",
                        help="the results folder of the preset whose runs should find the listing "
                             "(its `results:`; default: configs/published.yaml's)")
    args = parser.parse_args(argv)
    cache = Path(args.results) / "published" / (
        f"listing-{REPO.replace('/', '--')}-main.json")
    try:
        listing = list_repo(REPO, None, cache)
    except ContractError as err:
        print(f"multirun error: {err}", file=sys.stderr)
        return 1
    for folder, count in folders(listing).items():
        print(f"{folder}/*/log.pt\t{count} files, {500 * count} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
