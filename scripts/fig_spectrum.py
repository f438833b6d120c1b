"""Figure: Hessian spectra (Ritz values + SLQ density) of members of the first shard."""

from pathlib import Path

from multirun import hessian, snake
from multirun.plots.spectra import plot_spectrum
from multirun.plots.style import save_figure


def main(smk):
    spectra = {Path(p).stem: hessian.load_spectrum(p) for p in smk.input.spectra}
    fig = plot_spectrum(spectra, sigma=smk.params.sigma, title="Hessian spectrum of the training loss")
    save_figure(fig, [smk.output.png, *smk.output.other], dpi=smk.params.dpi)


snake.run(snakemake, main)
