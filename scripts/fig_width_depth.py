"""Figure: N_eff (both estimates), test and train loss over the width x depth grid."""

from multirun import hessian, snake
from multirun.plots.style import save_figure
from multirun.plots.width_depth import plot_width_depth


def main(smk):
    rows = hessian.load_effdim_csv(smk.input.table)
    fig = plot_width_depth(rows, z=smk.params.z, title="Width x depth: effective dimensionality and loss")
    save_figure(fig, [smk.output.png, *smk.output.other], dpi=smk.params.dpi)


snake.run(snakemake, main)
