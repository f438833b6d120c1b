"""Seeds per second of the subset shards and of the main run's full-data shards, from the
training jobs' benchmark files (per-shard job times, as Snakemake measured them)."""

from multirun import contracts, snake
from multirun.studies import timing


def main(smk):
    rows = []
    for name, paths, seeds in (("subsets", smk.input.subsets, smk.params.subset_seeds),
                               ("full_data", smk.input.full, smk.params.full_seeds)):
        seconds, rate = timing.seeds_per_second(paths, seeds)
        per_shard = [timing.benchmark_seconds(p) for p in paths]
        rows.append({"program": name, "seeds": seeds, "shards": len(paths),
                     "seconds": round(seconds, 2), "seeds_per_second": round(rate, 3),
                     "shard_seconds_min": round(min(per_shard), 2),
                     "shard_seconds_max": round(max(per_shard), 2)})
        print(f"{name}: {seeds} seeds in {seconds:.1f} s ({rate:.2f} seeds/s)", flush=True)
    contracts.save_csv(smk.output.table, rows, list(rows[0]))


snake.run(snakemake, main)
