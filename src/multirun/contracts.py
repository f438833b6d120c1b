"""File contracts between stages: atomic writes and validated reads.

Every reader checks shape, dtype and finiteness and raises :class:`ContractError`
naming the file and the command that remakes it (:func:`remake`); every writer writes a
temporary file ``.NAME.XXXX.SUFFIX`` in the destination folder and renames it into place,
so a killed job leaves no half-written output behind (only the temporary, which the next
run of that job removes: :func:`sweep_temporaries`). Outputs get the permissions of any
file created under the user's umask. A full disk (or a file-size limit) while writing
raises :class:`DiskFullError`: one line naming the output and the space it needs.
"""

from __future__ import annotations

import csv
import errno
import json
import math
import os
import pickle
import shlex
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

# torch is imported inside the functions that use it: the Snakefile imports this module when
# it is parsed, and importing torch would cost every snakemake call (and SLURM step) 3-4 s.
if TYPE_CHECKING:
    import torch


class ContractError(ValueError):
    """An input file breaks its contract (missing, truncated, wrong shape, NaN...)."""


class DiskFullError(ContractError):
    """Writing an output failed for lack of space (ENOSPC, EDQUOT) or a file-size limit (EFBIG)."""


#: errno values that mean "no room to write": full disk, full quota, file-size limit
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


RUN_OPTIONS = "MULTIRUN_RUN_OPTIONS"  # set by the Snakefile: this run's config options


def run_options(configfiles, config) -> str:
    """``--configfile F ... --config K=V ...`` of a run, quoted for a shell: config files
    relative to the working directory where they lie below it, each ``--config`` value as
    YAML in flow style (``train='{seeds: 96}'``)."""
    import yaml

    def shown(f) -> str:
        rel = os.path.relpath(f)
        return str(f) if rel.startswith("..") else rel

    words = []
    if configfiles:
        words += ["--configfile", *map(shown, configfiles)]
    if config:
        words += ["--config", *(f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}"
                                .removesuffix("\n...") for k, v in config.items())]
    return " ".join(_shell_word(w) for w in words)


def _shell_word(word: str) -> str:
    """``word`` quoted for a POSIX shell: in double quotes where it holds single quotes
    and nothing a double-quoted string would expand (YAML's quoted ``'a.py:B'``)."""
    if "'" in word and not any(c in word for c in '"$`\\!'):
        return f'"{word}"'
    return shlex.quote(word)


def remake(path: str | os.PathLike) -> str:
    """The command that remakes output ``path`` and everything made from it.

    ``--forcerun FILE`` reruns the job that makes ``FILE`` whether or not its
    consumers are up to date (a plain ``snakemake`` does not remake a missing or
    damaged intermediate whose consumers look finished); Snakemake then reruns every
    job downstream of it. The run's own ``--configfile``/``--config`` follow (from
    ``RUN_OPTIONS``), so the command remakes the file of that config.
    """
    return f"remake it with: {remake_command([path])}"


def remake_command(paths) -> str:
    """``snakemake --cores all --forcerun PATH ...`` and the run's config options."""
    options = os.environ.get(RUN_OPTIONS, "")
    return " ".join(["snakemake --cores all --forcerun", *map(str, paths)]
                    + ([options] if options else []))


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def no_space(path: str | os.PathLike, err: OSError, written: int | None = None) -> DiskFullError:
    """One line for a write of ``path`` that failed with ``err`` (ENOSPC, EDQUOT or EFBIG).

    States what was written before the failure (the file needs more than that) and the
    free space of the filesystem (computed here, without writing anything).
    """
    path = Path(path)
    need = f"it needs more than the {_size(written)} written so far" if written else ""
    if err.errno == errno.EFBIG:
        what = "the file-size limit was reached (`ulimit -f`)"
        fix = "raise the limit (`ulimit -f unlimited`) and rerun"
    else:
        what = "no space left on the device" if err.errno == errno.ENOSPC else "disk quota exceeded"
        fix = "free space there and rerun"
    try:
        free = f"{_size(shutil.disk_usage(path.parent).free)} free in {path.parent}"
    except OSError:
        free = f"{path.parent} cannot be inspected"
    detail = "; ".join(x for x in (need, free) if x)
    return DiskFullError(f"{path}: cannot be written: {what} ({detail}); {fix}")


def space_errno(err: BaseException, folder: str | os.PathLike, written: int = 0) -> int | None:
    """The :data:`NO_SPACE` errno behind ``err``, or None when it is another failure.

    Writers wrap the system's error differently (``torch.save``: a RuntimeError whose
    context is the OSError; ``np.save``: an OSError without errno), so the exception
    chain is searched first, then the state is inspected: a file at the size limit
    (``RLIMIT_FSIZE``) or a filesystem with (almost) no space left.
    """
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in NO_SPACE:
            return seen.errno
        seen = seen.__cause__ or seen.__context__
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY and written >= limit:
            return errno.EFBIG
    except (ImportError, OSError, ValueError):
        pass
    try:
        if shutil.disk_usage(folder).free < (1 << 20):
            return errno.ENOSPC
    except OSError:
        pass
    return None


def sweep_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries :func:`atomic_path` left beside output ``path`` (a killed job).

    They are named ``.NAME.XXXX.SUFFIX`` for output ``NAME``; only the job that makes
    ``NAME`` writes them, so a job may remove those of its own outputs when it starts.
    Returns the paths removed.
    """
    path = Path(path)
    gone = []
    for tmp in path.parent.glob(f".{path.name}.*") if path.parent.is_dir() else ():
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            gone.append(tmp)
    return gone


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cpu``/``cuda`` as given."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ContractError("device 'cuda' was requested but no CUDA device is visible; use 'auto'")
    return torch.device(name)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary file keeps ``path``'s suffix so that writers
    which append one (``np.save``) write exactly where they are told.
    Permissions are those of a plain ``open`` under the user's umask (``mkstemp``
    alone would give 0600). An ``OSError`` for lack of space (:data:`NO_SPACE`) becomes
    one :class:`DiskFullError` naming ``path``; the temporary is removed.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                   suffix=path.suffix)
    except OSError as err:
        if err.errno in NO_SPACE:
            raise no_space(path, err) from None
        raise
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # torch.save reports a full disk as RuntimeError
        written = tmp.stat().st_size if tmp.exists() else 0
        cause = space_errno(err, tmp.parent, written)
        if cause is None:
            raise
        raise no_space(path, OSError(cause, os.strerror(cause)), written) from None
    finally:
        tmp.unlink(missing_ok=True)


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write one array as ``.npy`` atomically (memory-mappable by readers)."""
    with atomic_path(path) as tmp:
        np.save(tmp, np.ascontiguousarray(array))


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Write named arrays as an uncompressed ``.npz`` atomically."""
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)


def save_json(path: str | os.PathLike, obj) -> None:
    """Write JSON atomically (sorted keys, indented)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_csv(path: str | os.PathLike, rows: list[dict], fields: list[str]) -> None:
    """Write ``rows`` (dicts with keys ``fields``) as CSV with a header, atomically.

    Every row must hold exactly the keys ``fields`` (a :class:`ContractError` naming the
    file and the row otherwise), so a table never gets a silently empty column.
    """
    want = set(fields)
    for i, row in enumerate(rows):
        if set(row) != want:
            missing, extra = sorted(want - set(row)), sorted(set(row) - want)
            raise ContractError(f"{path}: row {i} does not match the columns {list(fields)} "
                                f"(missing {missing}, unexpected {extra})")
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows(rows)


def load_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a CSV written by :func:`save_csv` (values as strings), every row complete.

    Checks only that the file reads and no row is cut short; :func:`load_table` checks a
    table's columns, row count and values too.
    """
    path = Path(path)
    if not path.exists():
        raise _fail(path, "file is missing")
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise _fail(path, f"cannot be read as CSV ({err}); the file is truncated or corrupt") from None
    if not header:
        raise _fail(path, "is empty (no header); the file is truncated or corrupt")
    for i, row in enumerate(rows):
        if None in row or None in row.values():
            raise _fail(path, f"row {i + 1} has {len([v for v in row.values() if v is not None])} "
                        f"fields, the header {len(header)}; the file is truncated or corrupt")
    return rows


#: the learning curves of a training history ((S, epochs) each): metrics.csv, a sweep's curves
METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")


def metrics_rows(history, seeds) -> list[dict]:
    """One row per (epoch, seed) of a training history: the rows of ``metrics.csv``.

    ``epoch`` counts from 1 (the model after that many epochs); ``seed``; the
    :data:`METRICS` of ``history`` ((S, epochs) arrays or tensors: ``train_loss``,
    ``train_acc`` as trained, ``test_loss``, ``test_acc``), empty where the training
    recorded none (no test split), NaN after a member diverged.
    """
    cols = {k: np.asarray(history[k], dtype=np.float64) for k in METRICS if k in history}
    epochs = np.shape(history["train_loss"])[1]
    return [{"epoch": e + 1, "seed": int(seed),
             **{k: (float(cols[k][i, e]) if k in cols else "") for k in METRICS}}
            for e in range(epochs) for i, seed in enumerate(seeds)]


@dataclass(frozen=True)
class Table:
    """The contract of a CSV table: its columns, which hold numbers, where blanks/NaN may be."""

    columns: tuple[str, ...]
    numeric: tuple[str, ...] = ()
    blank_ok: tuple[str, ...] = ()  # e.g. ``k`` of the baselines
    nan_ok: tuple[str, ...] = ()  # e.g. an estimate left out by design


_SCORE_NUMBERS = ("n_models", "subset", "k", "accuracy", "ci_low", "ci_high")
#: the CSV tables stages exchange (writers take their header from here)
TABLES = {
    "scores": Table(("n_models", "subset", "method", "k", "vote", "accuracy", "ci_low",
                     "ci_high"), _SCORE_NUMBERS, blank_ok=("k",)),
    "per_class": Table(("class", "n_models", "subset", "method", "k", "vote", "accuracy"),
                       ("class", "n_models", "subset", "k", "accuracy")),
    "effdim": Table(
        ("spectrum", "width", "depth", "seed", "num_params", "train_loss", "test_loss",
         "test_accuracy", "top_eigenvalue", "bottom_eigenvalue", "converged", "probes", "z",
         "effective_dimension", "effective_dimension_se", "effective_dimension_topk"),
        ("width", "depth", "seed", "num_params", "train_loss", "test_loss", "test_accuracy",
         "top_eigenvalue", "bottom_eigenvalue", "converged", "probes", "z",
         "effective_dimension", "effective_dimension_se", "effective_dimension_topk"),
        nan_ok=("effective_dimension", "effective_dimension_se")),
    "memorization": Table(("variant", "epochs", "models", "examples", "mean"),
                          ("epochs", "models", "examples", "mean")),
    "label_noise": Table(("architecture", "alpha", "seed", "test_accuracy", "val_accuracy",
                          "best_epoch", "epochs_run"),
                         ("alpha", "seed", "test_accuracy", "val_accuracy", "best_epoch",
                          "epochs_run"), nan_ok=("val_accuracy",)),
    "label_errors": Table(("method", "n_models", "subset", "average_precision",
                           "precision_at_noise"),
                          ("n_models", "subset", "average_precision", "precision_at_noise")),
}


def load_table(path: str | os.PathLike, table: str | Table, *,
               rows: int | None = None) -> list[dict[str, str]]:
    """Rows of a CSV table checked against its contract (:data:`TABLES`); values stay strings.

    The header must hold the table's ``columns`` (others allowed); ``rows``: the number
    of data rows when the config fixes it (else at least one); ``numeric`` columns must
    parse as finite numbers, blank only where ``blank_ok``, NaN only where ``nan_ok``.
    A truncated or malformed table raises one :class:`ContractError` naming ``path``,
    the first offence and the command that remakes the file.
    """
    spec = TABLES[table] if isinstance(table, str) else table
    path = Path(path)
    found = load_csv(path)
    with open(path, newline="") as f:
        header = next(csv.reader(f), [])
    missing = [c for c in spec.columns if c not in header]
    if missing:
        raise _fail(path, f"lacks columns {missing} (header {header}); it is not the table expected here")
    if rows is not None and len(found) != rows:
        raise _fail(path, f"has {len(found)} rows, the config gives {rows}; the file is truncated or stale")
    if not found:
        raise _fail(path, "has a header but no rows; the file is truncated")
    for i, row in enumerate(found):
        for col in spec.numeric:
            value = row[col].strip()
            if not value and col in spec.blank_ok:
                continue
            try:
                number = float(value)
            except ValueError:
                raise _fail(path, f"row {i + 1}, column {col!r}: {value!r} is not a number") from None
            if not math.isfinite(number) and col not in spec.nan_ok:
                raise _fail(path, f"row {i + 1}, column {col!r} is {value}; no NaN or inf may be here")
    return found


def save_torch(path: str | os.PathLike, obj) -> None:
    """``torch.save`` atomically.

    The file is written through a file object, so its bytes do not depend on the
    temporary's random name (``torch.save`` to a path names the zip's records after
    the file): the same object always gives the same bytes.
    """
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def save_with(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` and rename the result onto ``path`` (figures, CSV...)."""
    with atomic_path(path) as tmp:
        write(tmp)


def _fail(path, what: str, fix: str | None = None) -> ContractError:
    """``PATH: what; fix`` where ``fix`` defaults to the command that remakes ``PATH``."""
    return ContractError(f"{path}: {what}; {fix or remake(path)}")


def load_npy(
    path: str | os.PathLike,
    *,
    ndim: int | None = None,
    dtype: np.dtype | str | None = None,
    mmap: bool = True,
    check_finite: bool = True,
    fix: str | None = None,
) -> np.ndarray:
    """Read a ``.npy`` (memory-mapped by default) and check its contract.

    Raises :class:`ContractError` naming ``path`` when the file is missing,
    truncated or corrupt, has the wrong rank or dtype, or holds NaN/inf; the message ends
    with ``fix`` (default: the command that remakes a workflow output; give it for a
    file the user supplies). The finiteness check streams over the leading axis so a
    memory-mapped file is never loaded whole.
    """
    path = Path(path)
    if not path.exists():
        raise _fail(path, "file is missing", fix)
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise _fail(path, f"cannot be read as .npy ({err}); the file is truncated or corrupt", fix) from err
    if ndim is not None and array.ndim != ndim:
        raise _fail(path, f"expected {ndim} dimensions, found shape {array.shape}", fix)
    if dtype is not None and array.dtype != np.dtype(dtype):
        raise _fail(path, f"expected dtype {np.dtype(dtype)}, found {array.dtype}", fix)
    if check_finite and array.dtype.kind == "f":
        step = max(1, (1 << 26) // max(1, array[:1].size * array.itemsize))
        for start in range(0, max(len(array), 1), step):
            block = np.asarray(array[start : start + step])
            if not np.isfinite(block).all():
                bad = start + int(np.argwhere(~np.isfinite(block))[0][0])
                raise _fail(path, f"holds NaN or inf (first at index {bad} of axis 0)",
                            fix or "the run that produced it diverged; check its training log, "
                            "then rerun")
    return array


def load_npz(path: str | os.PathLike, keys: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Read a whole ``.npz`` into memory, checking that ``keys`` are present."""
    path = Path(path)
    if not path.exists():
        raise _fail(path, "file is missing")
    try:
        with np.load(path, allow_pickle=False) as f:
            out = {k: f[k] for k in f.files}
    except Exception as err:  # zipfile.BadZipFile, ValueError, OSError, EOFError
        raise _fail(path, f"cannot be read as .npz ({err}); the file is truncated or corrupt") from err
    missing = [k for k in keys if k not in out]
    if missing:
        raise _fail(path, f"lacks arrays {missing} (has {sorted(out)})")
    return out


def refused_pickle(path: str | os.PathLike, err: BaseException,
                   fix: str | None = None) -> ContractError | None:
    """The error to raise when ``torch.load(..., weights_only=True)`` refused ``path``'s pickle
    (it names an object other than tensors and plain types, whose building could run code),
    naming the file and the object; None for any other failure."""
    text = str(err)
    if not (isinstance(err, pickle.UnpicklingError) and "Weights only load failed" in text
            and "GLOBAL" in text):  # not e.g. "Unsupported operand 171": corrupt bytes
        return None
    what = next((line.strip() for line in text.splitlines() if "GLOBAL" in line), "")
    return ContractError(
        f"{path}: holds pickled objects other than tensors and plain types, which could run "
        f"code on load ({what or 'not an allowed type'}): refused, nothing in it ran; "
        f"{fix or remake(path)}")


def load_torch(path: str | os.PathLike, keys: tuple[str, ...] = ()) -> dict:
    """``torch.load`` a dict on the CPU with ``weights_only=True`` (tensors and plain types
    only: a file that holds other objects is refused unread, so it cannot run code),
    checking that ``keys`` are present."""
    import torch

    path = Path(path)
    if not path.exists():
        raise _fail(path, "file is missing")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        refused = refused_pickle(path, err)
        if refused is not None:
            raise refused from None
        raise _fail(path, f"cannot be loaded by torch ({err}); the file is truncated or corrupt") from err
    if not isinstance(obj, dict):
        raise _fail(path, f"expected a dict, found {type(obj).__name__}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise _fail(path, f"lacks keys {missing}")
    return obj


def num_classes(dataset: dict[str, np.ndarray]) -> int:
    """C of a dataset in the contract: ``len(classes)`` where it names them, else
    ``max(y_train) + 1`` (the models' output width)."""
    if "classes" in dataset:
        return len(dataset["classes"])
    return int(dataset["y_train"].max()) + 1


def load_dataset(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a dataset ``.npz``: ``x_train`` (N, ...), ``y_train`` (N,) int64, same for test.

    Optional ``images_train``/``images_test`` (N, H, W[, 3]) uint8 for picture grids;
    ``classes`` (C,) str.
    """
    data = load_npz(path, ("x_train", "y_train", "x_test", "y_test"))
    for split in ("train", "test"):
        x, y = data[f"x_{split}"], data[f"y_{split}"]
        if y.ndim != 1 or y.dtype != np.int64 or len(x) != len(y):
            raise _fail(path, f"{split} split: x {x.shape} and y {y.shape} {y.dtype} do not match "
                        "the contract x (N, ...), y (N,) int64")
        if not np.isfinite(x).all():
            raise _fail(path, f"x_{split} holds NaN or inf")
    return data
