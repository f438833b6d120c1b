"""multirun: the science of many training runs.

Modules (each small, pure and tested):

* ``io``       — file contracts between stages: atomic writes, validated reads.
* ``data``     — MNIST-1D (offline), CIFAR-10 (torchvision), published hub logits.
* ``models``   — model families with a width knob (MLP, 1-D CNN, airbench CNN, ResNet-18).
* ``train``    — one recipe under many seeds as one vectorised program.
* ``kernel``   — the ensemble correlation kernel, streamed over models as GEMMs.
* ``knn``      — k-NN votes on kernel neighbours, ensemble and single-model baselines.
* ``hessian``  — Hessian-vector products, Lanczos, spectral density, effective dimension.
* ``plots``    — the figures.
* ``config``, ``schema`` — the config's checks and its defaults (the schema, the one place).
* ``snake``, ``codehash`` — what every script runs through; the library code a rule's script uses.
* ``gpus``     — a device slot per GPU job on a local run (file locks, one per device).
"""

__version__ = "0.1.0"
