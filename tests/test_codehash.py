"""The library code a script runs, found from its imports, and the hash that reruns its rule."""

from __future__ import annotations

from pathlib import Path

from conftest import ROOT

from multirun.codehash import code_hash, module_files

SRC = ROOT / "src" / "multirun"


def names(script: str) -> set[str]:
    return {p.relative_to(SRC).as_posix() for p in module_files(ROOT / "scripts" / script, SRC)}


def test_figure_scripts_run_plots_not_training():
    spectrum = names("fig_spectrum.py")
    assert {"plots/spectra.py", "plots/style.py", "plots/__init__.py", "hessian/effdim.py"} <= spectrum
    assert not {"train.py", "models.py", "config.py"} & spectrum
    assert not any(n.startswith("kernel/") for n in spectrum)


def test_training_runs_models_not_kernel_or_plots():
    train = names("train.py")
    assert {"__init__.py", "train.py", "models.py", "contracts.py", "snake.py"} <= train
    assert not {"knn.py", "config.py"} & train
    assert not any(n.startswith(("plots/", "kernel/", "hessian/")) for n in train)


def test_spectra_and_study_tables_do_not_rerun_when_a_training_program_changes():
    """A seed's labels come from ``streams`` and checkpoints from ``checkpoint``: neither
    the Hessian nor the label-noise table depends on the training loop or its programs."""
    for script in ("hessian.py", "study_label_noise.py", "logits.py"):
        assert not {"train.py", "programs.py"} & names(script), script
    assert "streams.py" in names("hessian.py")


def make_package(root: Path) -> tuple[Path, Path]:
    pkg = root / "multirun"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""pkg"""\n')
    (pkg / "a.py").write_text("import os\nfrom .b import f\n\ndef g():\n    import multirun.sub.c\n")
    (pkg / "b.py").write_text("def f():\n    return 1\n")
    (pkg / "b.cpp").write_text("int f() { return 1; }\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("from ..b import f\n")
    (pkg / "unused.py").write_text("x = 1\n")
    script = root / "script.py"
    script.write_text("from multirun import a\nimport numpy\n")
    return pkg, script


def test_closure_follows_relative_lazy_and_package_imports(tmp_path):
    pkg, script = make_package(tmp_path)
    found = {p.relative_to(pkg).as_posix() for p in module_files(script, pkg)}
    assert found == {"__init__.py", "a.py", "b.py", "b.cpp", "sub/__init__.py", "sub/c.py"}


def test_hash_changes_with_used_code_only(tmp_path):
    pkg, script = make_package(tmp_path)
    before = code_hash(script, pkg)
    (pkg / "unused.py").write_text("x = 2\n")
    assert code_hash(script, pkg) == before
    (pkg / "b.cpp").write_text("int f() { return 2; }\n")
    changed = code_hash(script, pkg)
    assert changed != before
    (pkg / "b.cpp").write_text("int f() { return 1; }\n")
    assert code_hash(script, pkg) == before  # content, not modification time


def full_tree_imports(path: Path, module: str) -> set[str]:
    """The reference: every import node of the file's whole syntax tree, resolved as the
    scanner resolves them (the scanner parses only the import statements)."""
    import ast

    is_pkg, names = path.name == "__init__.py", set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = module.split(".") if is_pkg else module.split(".")[:-1]
            stem = (".".join(base[: len(base) - (node.level - 1)] + ([node.module] if node.module else []))
                    if node.level else node.module or "")
            names |= {stem, *(f"{stem}.{a.name}" for a in node.names)}
    return {n for n in names if n == "multirun" or n.startswith("multirun.")}


def test_import_scan_finds_what_the_whole_syntax_tree_finds(tmp_path):
    from multirun.codehash import _imported

    files = [*SRC.rglob("*.py"), *(ROOT / "scripts").glob("*.py"), *(ROOT / "examples").glob("*.py")]
    tricky = tmp_path / "tricky.py"
    tricky.write_text('"""Docs: import statements are read, not run."""\n'
                      "from multirun.a import (  # a comment (with a parenthesis)\n"
                      "    x,  # ) another\n    y,\n)\n\n\ndef f():\n    import multirun.b as b\n"
                      "    from . import c\n    return b\n")
    for path in [*files, tricky]:
        assert _imported(path, "multirun.pkg.mod") == full_tree_imports(path, "multirun.pkg.mod"), path
    assert _imported(tricky, "multirun.pkg.mod") == {
        "multirun.a", "multirun.a.x", "multirun.a.y", "multirun.b", "multirun.pkg", "multirun.pkg.c"}
