"""Figure: a sweep's test accuracy against its first numeric key, and its learning curves."""

from multirun import contracts, snake
from multirun.plots.style import save_figure
from multirun.plots.sweeps import plot_sweep


def main(smk):
    fig = plot_sweep(contracts.load_csv(smk.input.summary), contracts.load_csv(smk.input.curves),
                     dict(smk.params.grid), title=smk.params.title)
    save_figure(fig, [smk.output.png, *smk.output.other], dpi=smk.params.dpi)


snake.run(snakemake, main)
