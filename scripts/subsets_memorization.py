"""Memorization per training example and influence per (train, test) pair from subset models;
how often the ensemble kernel's most similar (test, train) pairs are high-influence pairs."""

import numpy as np

from multirun import contracts, kernel, snake
from multirun.attribution import memorization as fz
from multirun.attribution import outcomes


def main(smk):
    ds = contracts.load_dataset(smk.input.data)
    masks = np.asarray(contracts.load_npy(smk.input.masks, ndim=2, dtype=bool))
    p = smk.params
    correct, _ = outcomes.outcomes(kernel.ShardedLogits(smk.input.train), ds["y_train"])
    correct_test, _ = outcomes.outcomes(kernel.ShardedLogits(smk.input.test), ds["y_test"])
    if correct.shape != masks.shape:
        raise contracts.ContractError(f"{smk.input.masks}: masks {masks.shape} do not match the "
                                      f"logits ({correct.shape}); rerun the subsets target")
    mem = fz.memorization(masks, correct)
    rows = [{"index": i, "label": int(ds["y_train"][i]), "mem": float(mem["mem"][i]),
             "se": float(mem["se"][i]), "n_in": int(mem["n_in"][i]), "n_out": int(mem["n_out"][i])}
            for i in range(masks.shape[1])]
    contracts.save_csv(smk.output.table, rows, list(rows[0]))

    infl, se = fz.influence(masks, correct_test)  # (train, test)
    tr, te = fz.top_pairs(infl, p.top_pairs)
    pairs = [{"rank": r + 1, "train": int(i), "test": int(t), "influence": float(infl[i, t]),
              "se": float(se[i, t]), "train_label": int(ds["y_train"][i]),
              "test_label": int(ds["y_test"][t]), "mem": float(mem["mem"][i])}
             for r, (i, t) in enumerate(zip(tr, te, strict=True))]
    contracts.save_csv(smk.output.pairs, pairs, list(pairs[0]))

    dense = contracts.load_npy(smk.input.kernel, ndim=2)  # (test, train)
    if dense.shape != infl.T.shape:
        raise contracts.ContractError(f"{smk.input.kernel}: shape {dense.shape}, expected (test, "
                                      f"train) {infl.T.shape}; rerun the dense kernel")
    high = infl.T >= p.threshold  # (test, train)
    kt, ki = fz.top_pairs(dense, max(p.precision_at))
    at = fz.precision_at(kt, ki, high, list(p.precision_at))
    base = float(np.nanmean(high)) if high.size else float("nan")
    table = [{"ranking": "kernel", "k": k, "precision": v, "threshold": p.threshold}
             for k, v in at.items()]
    table += [{"ranking": "random", "k": k, "precision": base, "threshold": p.threshold}
              for k in at]
    contracts.save_csv(smk.output.precision, table, list(table[0]))
    print(f"{int(high.sum())} of {high.size} pairs have influence >= {p.threshold}; kernel "
          f"precision {at}", flush=True)
    contracts.save_npz(
        smk.output.summary, mem=mem["mem"], se=mem["se"], n_models=np.array(len(masks)),
        influence_train=tr.astype(np.int64), influence_test=te.astype(np.int64),
        influence=infl[tr, te], kernel_test=kt.astype(np.int64), kernel_train=ki.astype(np.int64),
        kernel_similarity=dense[kt, ki], kernel_influence=infl.T[kt, ki],
        threshold=np.array(p.threshold))


snake.run(snakemake, main)
