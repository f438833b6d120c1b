"""Test accuracy of every (architecture, alpha, seed) with its early-stopping record."""

from multirun import checkpoint, contracts, kernel, knn, snake
from multirun.studies import timing


def main(smk):
    cells, n_shards = [tuple(c) for c in smk.params.cells], smk.params.shards
    alphas = list(dict.fromkeys(a for _, a in cells))  # the order of smk.input.data
    labels = {a: contracts.load_dataset(path)["y_test"]
              for a, path in zip(alphas, smk.input.data, strict=True)}
    rows = []
    for c, (arch, alpha) in enumerate(cells):
        part = slice(c * n_shards, (c + 1) * n_shards)
        accs = knn.single_model_accuracies(kernel.ShardedLogits(smk.input.test[part]), labels[alpha])
        seeds, val, best, run_epochs = [], [], [], []
        for path in smk.input.checkpoints[part]:
            ckpt = checkpoint.load_checkpoint(path)
            hist = ckpt["history"]
            seeds += list(ckpt["seeds"])
            if "val_acc" in hist:
                val += hist["val_acc"].gather(1, hist["best_epoch"][:, None])[:, 0].tolist()
                best += (hist["best_epoch"] + 1).tolist()
            else:  # no early stopping: the last epoch is kept
                val += [float("nan")] * len(ckpt["seeds"])
                best += [hist["train_loss"].shape[1]] * len(ckpt["seeds"])
            run_epochs += [hist["train_loss"].shape[1]] * len(ckpt["seeds"])
        seconds, rate = timing.seeds_per_second(smk.input.benchmarks[part], len(seeds))
        for i, seed in enumerate(seeds):
            rows.append({"architecture": arch, "alpha": alpha, "seed": seed,
                         "test_accuracy": float(accs[i]), "val_accuracy": val[i],
                         "best_epoch": best[i], "epochs_run": run_epochs[i],
                         "train_seconds": round(seconds, 2), "seeds_per_second": round(rate, 3)})
        print(rows[-1], flush=True)
    contracts.save_csv(smk.output.table, rows, list(rows[0]))


snake.run(snakemake, main)
