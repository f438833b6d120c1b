"""LDS of datamodels, TRAK and the signed ensemble kernel on the held-out subset models, by
number of models used; agreement of datamodel rows with the other attributions."""

import numpy as np

from multirun import contracts, kernel, snake
from multirun.attribution import lds, scores
from multirun.studies import subsets


def main(smk):
    ds = contracts.load_dataset(smk.input.data)
    masks = subsets.load_masks(smk.input.masks)
    p = smk.params
    margin = subsets.margins_on_test(smk.input.test, ds["y_test"], p.test_examples)
    t = margin.shape[1]
    held = subsets.split(len(masks), p.validation, p.heldout)["heldout"]
    hm, hy = masks[held], margin[held]
    dm = contracts.load_npz(smk.input.datamodels, ("counts",))
    tk = contracts.load_npz(smk.input.trak)
    attributions = {("datamodels", int(n)): dm[f"weights_{n}"] for n in dm["counts"]}
    for key, value in tk.items():
        method, n = key.rsplit("_", 1)
        attributions[(method, int(n))] = value
    main_train = kernel.ShardedLogits(smk.input.main_train)
    main_test = kernel.ShardedLogits(smk.input.main_test)
    options = kernel.KernelOptions.from_params(p, device=snake.device(smk, "kernel"),
                                               job_memory_mb=smk.resources.get("mem_mb"),
                                               progress=False)
    for n in p.kernel_counts:
        dense = kernel.dense_kernel(main_test, main_train, models=np.arange(n), options=options)[:t]
        attributions[("kernel", n)] = scores.signed_kernel(dense, ds["y_test"][:t], ds["y_train"])
        attributions[(f"kernel_top{p.top_k}", n)] = scores.signed_kernel(
            dense, ds["y_test"][:t], ds["y_train"], top_k=p.top_k)
    rows, per_test = [], {}
    for (method, n), a in sorted(attributions.items()):
        res = lds.lds(a, hm, hy)
        rows.append({"method": method, "n_models": n, "lds": res["mean"], "se": res["se"],
                     "valid": res["valid"], "heldout": len(held), "test_examples": t})
        per_test[f"{method}_{n}"] = res["per_test"]
        print(f"{method:>14} {n:>5} models: LDS {res['mean']:.4f} +- {res['se']:.4f}", flush=True)
    contracts.save_csv(smk.output.table, rows, list(rows[0]))
    best = attributions[("datamodels", int(max(dm["counts"])))]
    agree = []
    for (method, n), a in sorted(attributions.items()):
        if method == "datamodels":
            continue
        corr = scores.row_correlation(best, a)
        row = {"method": method, "n_models": n, "datamodel_models": int(max(dm["counts"])),
               "correlation": float(np.nanmean(corr)),
               "correlation_se": float(np.nanstd(corr, ddof=1) / np.sqrt(np.isfinite(corr).sum()))}
        for k in p.overlap_k:
            row[f"overlap_top{k}"] = float(scores.top_k_overlap(best, a, k).mean())
        agree.append(row)
    contracts.save_csv(smk.output.agreement, agree, list(agree[0]))
    contracts.save_npz(smk.output.per_test, **per_test)


snake.run(snakemake, main)
