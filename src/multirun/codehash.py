"""Which library code a script runs, as content hashes per file (a rule parameter).

A rule that passes ``code=code_hashes(script)`` among its ``params`` reruns when
the library code its script runs changes, and only then. The parameter is a mapping
``{"multirun/train.py": "1a2b3c4d", ...}`` (file -> short content hash), so the
before/after that ``snakemake -n`` prints names the edited file. It covers the
``multirun`` modules the script imports, followed transitively through the
library (found by reading ``import`` statements with :mod:`ast`, nothing is
executed), the ``__init__`` of every package on the way, and files beside a
module that carry its name with another suffix (``kernel.cpp`` beside
``kernel.py``) or that sit in an imported package's folder.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import re
from pathlib import Path

import multirun

PACKAGE = "multirun"
PACKAGE_DIR = Path(multirun.__file__).resolve().parent


@functools.lru_cache(maxsize=4096)
def _module_file(name: str, root: Path) -> Path | None:
    """``multirun.a.b`` -> ``root/a/b.py`` or ``root/a/b/__init__.py`` (None if neither)."""
    parts = name.split(".")[1:]
    base = root.joinpath(*parts)
    candidates = [base.with_suffix(".py")] if parts else []
    return next((p for p in [*candidates, base / "__init__.py"] if p.is_file()), None)


def _stamp(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path), st.st_mtime_ns, st.st_size


def _imported(path: Path, module: str) -> set[str]:
    """Dotted names of the ``multirun`` modules that ``path`` (module ``module``) may import."""
    return set(_imports_in(_stamp(path), module))


# An import statement at any indentation, parenthesised lists included: only these lines are
# parsed (a whole module's syntax tree costs ~10 ms, and a Snakefile asks for ~80 of them).
_STATEMENT = re.compile(r"^[ \t]*(?:from[ \t]+[\w.]+[ \t]+import[ \t]*(?:\([^)]*\)|[^\n]*)"
                        r"|import[ \t]+[^\n]*)", re.M)


@functools.lru_cache(maxsize=4096)
def _imports_in(stamp: tuple[str, int, int], module: str) -> frozenset[str]:
    """:func:`_imported` of the file ``stamp`` names (path, mtime, size: read once per process
    while it is unchanged; a Snakefile asks for the closure of every rule's script, and they
    share most modules)."""
    filename = stamp[0]
    statements = []
    code = re.sub(r"#[^\n]*", "", Path(filename).read_text())  # a comment may hold a ")"
    for match in _STATEMENT.finditer(code):
        try:  # a line of a docstring that reads like an import is not code
            statements += ast.parse(match.group().strip()).body
        except SyntaxError:
            continue
    is_pkg = Path(filename).name == "__init__.py"
    names: set[str] = set()
    for node in statements:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            names.add(stem)
            names.update(f"{stem}.{alias.name}" for alias in node.names)  # submodules
    return frozenset(n for n in names if n == PACKAGE or n.startswith(PACKAGE + "."))


def module_files(script: str | Path, root: Path = PACKAGE_DIR) -> list[Path]:
    """Every library file ``script`` runs: the closure of its ``multirun`` imports, sorted."""
    seen: dict[str, Path] = {}
    todo = sorted(_imported(Path(script), "__main__"))
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        # importing a.b.c runs the __init__ of a and a.b first
        parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        todo += [p for p in parents if p not in seen]
        path = _module_file(name, root)
        if path is None:  # a name imported from a module, not a module
            continue
        seen[name] = path
        todo += sorted(_imported(path, name) - set(seen))
    files = set(seen.values())
    for path in list(files):
        files |= _companions(path)
    return sorted(files)


@functools.lru_cache(maxsize=4096)
def _companions(path: Path) -> frozenset[Path]:
    """Non-Python files that belong to module ``path``: beside it with its name (``kernel.cpp``
    beside ``kernel.py``), or anywhere in its folder for a package's ``__init__.py``."""
    if path.name == "__init__.py":
        found = (p for p in path.parent.iterdir() if p.is_file())
    else:
        found = path.parent.glob(path.stem + ".*")
    return frozenset(p for p in found if p.suffix not in (".py", ".pyc"))


def file_hash(path: str | Path, length: int = 8) -> str:
    """sha256 of a file's contents (hex, ``length`` chars)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:length]


def code_hashes(script: str | Path, root: Path = PACKAGE_DIR,
                extra: list[str | Path] | tuple = ()) -> dict[str, str]:
    """``{"multirun/REL_PATH": short hash}`` of :func:`module_files`, then ``{str(p): hash}``
    of each ``extra`` file (sorted; a file that does not exist maps to ``"missing"``)."""
    out = {f"{root.name}/{p.relative_to(root).as_posix()}": file_hash(p)
           for p in module_files(script, root)}
    for path in sorted({str(p) for p in extra}):
        out[path] = file_hash(path) if Path(path).is_file() else "missing"
    return out


def code_hash(script: str | Path, root: Path = PACKAGE_DIR) -> str:
    """sha256 over the relative paths and contents of :func:`module_files` (hex, 16 chars)."""
    h = hashlib.sha256()
    for path in module_files(script, root):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]
