"""multirun: the science of many training runs.

Modules (each small and tested):

* ``contracts`` — file contracts between stages: atomic writes, validated reads, remake commands.
* ``config``, ``schema`` — the config's checks and its defaults (the schema, the one place).
* ``data`` — MNIST-1D (offline), digits, CIFAR-10 (torchvision), your own ``.npz``.
* ``model_spec``, ``models`` — model specs (checked without torch) and the model zoo
  (MLP, 1-D CNN, airbench CNN, ResNet-18, your own).
* ``recipe``, ``programs``, ``train``, ``early_stopping`` — the recipe's keys, the vectorised
  programs (one optimisation step of S stacked models), the shard loop, early stopping.
* ``checkpoint`` — the shard checkpoint format, one member as a module, evaluation.
* ``sweeps`` — grids of model/recipe values x seeds, their points, tables and packing.
* ``published``, ``local_logits`` — the write-up's hub logits and your own, as logit shards.
* ``kernel`` — the ensemble correlation kernel, streamed over models as GEMMs.
* ``knn`` — k-NN votes on kernel neighbours, ensemble and single-model baselines.
* ``hessian`` — Hessian-vector products, Lanczos, spectral density, effective dimension.
* ``studies``, ``attribution`` — the many-run studies, and the estimators over
  subset-trained models (memorization, influence, datamodels, TRAK, the LDS).
* ``plots`` — the figures; ``headline``, ``summary`` — the report's and the README's tables.
* ``snake``, ``codehash`` — what every script runs through; the library code a rule's script uses.
* ``gpus``, ``locks`` — a device slot per GPU job on a local run; a live run's lock told
  from a dead one's.
* ``lockfile``, ``timing`` — the pinned versions; per-phase seconds for the benchmarks.
"""

__version__ = "0.1.0"
