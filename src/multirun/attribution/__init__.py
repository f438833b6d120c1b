"""Estimators over many models trained on random subsets of the training set (issue 17).

Every estimator is a matrix product over the subset masks and per-model outcomes; none
holds a (models x train x test) array. Layout:

* :mod:`~multirun.attribution.outcomes`: per-model outcomes from logits, streamed over
  logit shards: correctness (M, N), margins (M, N), out-of-sample probabilities (N, C);
* :mod:`~multirun.attribution.memorization`: Feldman & Zhang's memorization (N,) and
  influence (N_train, N_test) on correctness, top pairs, precision at k;
* :mod:`~multirun.attribution.datamodels`: ridge datamodels fit batched over test examples,
  the regularisation chosen per test example on a validation split of models;
* :mod:`~multirun.attribution.lds`: the linear datamodeling score (column-wise Spearman);
* :mod:`~multirun.attribution.trak`: TRAK's estimator (projected per-example gradients,
  the after-kernel, the ensemble over models);
* :mod:`~multirun.attribution.scores`: the ensemble kernel as an attribution (signed by
  label agreement) and the agreement between two attributions (correlation, top-k overlap).
"""
