"""Build (once per machine) and load the fused CPU loops of ``fused.cpp``.

The per-chunk elementwise work (fp16 -> fp32, log_softmax over classes, z-score, transpose
to the GEMM layout) costs as much as the GEMM itself in plain torch ops on a CPU (log_softmax
over a last dimension of 10 is slow). The two fused loops of ``fused.cpp``, compiled with the
system C++ compiler (``torch.utils.cpp_extension.load``), bring it to a few percent of the
GEMM. Without a compiler (or with ``MULTIRUN_KERNEL_FUSED=0``) the same computation runs as
torch ops; on CUDA torch ops are used.

The build is keyed by the source, the flags, torch's version and the CPU, and lands in
torch's extension cache (``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``).
``make setup`` runs ``python -m multirun.kernel.build`` after installing, so no workflow job
pays the build (about 30 s); a job then loads the built library directly, without a
compiler or ninja.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import platform
import sys
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("fused.cpp")
# -mprefer-vector-width=512: with -march=native alone GCC 12 vectorises the loops 256 bits wide
# even on AVX-512 CPUs (its tuning default); 512 made them 1.5-1.7x faster on an Intel Xeon
# with AVX-512 (docs/kernel.md). Without AVX-512 the flag changes nothing.
FLAGS = ["-O3", "-march=native", "-mprefer-vector-width=512", "-fno-math-errno",
         "-fno-trapping-math", "-fopenmp"]
_fused_module: object | None | bool = None  # None: not tried yet; False: unavailable


def extension_name() -> str:
    """The extension's name: a hash of the source, flags, torch version and CPU features."""
    cpu = ""
    with contextlib.suppress(OSError):
        cpu = next((line for line in open("/proc/cpuinfo") if line.startswith("flags")), "")
    key = "|".join([SOURCE.read_text(), *FLAGS, torch.__version__, platform.machine(), cpu])
    return "multirun_kernel_" + hashlib.sha1(key.encode()).hexdigest()[:12]


def build_directory(name: str) -> Path:
    """Where the extension ``name`` is built: torch's extension cache (``TORCH_EXTENSIONS_DIR``
    when set, as torch's own builds do)."""
    from torch.utils.cpp_extension import get_default_build_root

    return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()) / name


def _prebuilt(name: str):
    """The already built extension ``name`` imported from its cache, or None."""
    from torch.utils.cpp_extension import LIB_EXT

    library = build_directory(name) / f"{name}{LIB_EXT}"
    if not library.exists():
        return None
    spec = importlib.util.spec_from_file_location(name, library)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compile_extension(name: str):
    """Compile ``fused.cpp`` as extension ``name`` into its build directory and load it."""
    from torch.utils.cpp_extension import load

    directory = build_directory(name)
    directory.mkdir(parents=True, exist_ok=True)
    print(f"multirun.kernel: building the fused CPU kernels in {directory} (about a minute, "
          "once per machine)", file=sys.stderr)
    return load(name, sources=[str(SOURCE)], extra_cflags=FLAGS, extra_ldflags=["-fopenmp"],
                build_directory=str(directory))


def fused():
    """The compiled CPU kernels (``transform``, ``moments``), or None when unavailable.

    ``MULTIRUN_KERNEL_FUSED``: ``auto`` (default: load the prebuilt library, else build it
    when a compiler works, else fall back with a warning), ``1`` (fail if it cannot be
    built), ``0`` (never use it).
    """
    global _fused_module
    if _fused_module is None:
        mode = os.environ.get("MULTIRUN_KERNEL_FUSED", "auto")
        if mode == "0":
            _fused_module = False
            return None
        name = extension_name()
        try:
            _fused_module = _prebuilt(name) or compile_extension(name)
        except Exception as err:  # no compiler, no ninja, unsupported flags...
            if mode == "1":
                raise
            warnings.warn(f"fused CPU kernels unavailable ({type(err).__name__}: {err}); the "
                          "kernel runs as plain torch ops (several times slower on CPU)",
                          stacklevel=2)
            _fused_module = False
    return _fused_module or None


def main() -> int:
    """``python -m multirun.kernel.build``: build the fused loops now (make setup runs it)."""
    name = extension_name()
    module = _prebuilt(name) or compile_extension(name)
    print(f"multirun.kernel: fused CPU kernels ready: {module.__file__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
