"""Figure: train loss, test loss and effective dimensionality across widths, and their spectra."""

from multirun import hessian, snake
from multirun.plots.spectra import plot_spectrum, plot_width_sweep
from multirun.plots.style import save_figure


def main(smk):
    rows = hessian.load_effdim_csv(smk.input.table)
    fig = plot_width_sweep(rows, title="Width sweep: loss and effective dimensionality")
    save_figure(fig, [smk.output.png, *smk.output.other], dpi=smk.params.dpi)
    spectra = {}
    for path in smk.input.spectra:
        s = hessian.load_spectrum(path)
        spectra[f"width {int(s['width'])}"] = s
    fig = plot_spectrum(spectra, sigma=smk.params.sigma, title="Hessian spectra across widths")
    save_figure(fig, [smk.output.spectra_png, *smk.output.spectra_other], dpi=smk.params.dpi)


snake.run(snakemake, main)
