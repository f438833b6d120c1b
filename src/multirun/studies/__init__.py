"""Studies of many training runs built on the shared train/logits/kernel stages.

* :mod:`multirun.studies.variants`: corrupted dataset variants, each drawn once
  (RandX, RandY, alpha noisy copies, injected label errors);
* :mod:`multirun.studies.memorization`: P(correct) per training example across seeds;
* :mod:`multirun.studies.label_errors`: rankings of suspicious labels and their
  precision-recall against the injected ground truth;
* :mod:`multirun.studies.subsets`: subset training's masks, shards and config checks;
* :mod:`multirun.studies.timing`: seeds per second of the training jobs, from their benchmark files.

(The label-noise study's table is built by its script from the shards' evaluations.)
"""

from multirun.config import ConfigError


def check(studies: dict) -> None:
    """Cross-key rules of the ``studies`` config section a schema cannot say (ConfigError)."""
    err = studies["label_errors"]
    too_many = [n for n in err["model_counts"] if n > err["seeds"]]
    if too_many:
        raise ConfigError(f"config key studies.label_errors.model_counts: sizes {too_many} exceed "
                          f"studies.label_errors.seeds={err['seeds']}; lower them or train more seeds")
    noise = studies["label_noise"]
    if noise["recipe"].get("patience", 0) < 1:
        raise ConfigError("config key studies.label_noise.recipe.patience: early stopping needs "
                          "patience >= 1 (epochs without a better validation accuracy)")
