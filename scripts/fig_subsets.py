"""Figures of subset training: memorization, influence vs kernel pairs, label errors, LDS."""

from multirun import contracts, snake
from multirun.plots import subsets as figs
from multirun.plots.style import save_figure


def main(smk):
    ds = contracts.load_dataset(smk.input.data)
    out, dpi, n = smk.output, smk.params.dpi, smk.params.examples
    s = contracts.load_npz(smk.input.memorization, ("mem", "se", "n_models"))
    fig = figs.memorization(s["mem"], s["se"], ds["x_train"], ds["y_train"], n,
                            models=int(s["n_models"]), alpha=smk.params.alpha,
                            images=ds.get("images_train"))
    save_figure(fig, [out.mem_png, *out.mem_other], dpi=dpi)
    fig = figs.influence_pairs(s, contracts.load_csv(smk.input.precision), ds["x_train"],
                               ds["y_train"], ds["x_test"], ds["y_test"], n,
                               images_train=ds.get("images_train"),
                               images_test=ds.get("images_test"))
    save_figure(fig, [out.infl_png, *out.infl_other], dpi=dpi)
    rows = contracts.load_csv(smk.input.errors)
    noise = contracts.load_npz(smk.input.curves, ("noise",))["noise"]
    fig = figs.label_errors(rows, float(noise))
    save_figure(fig, [out.err_png, *out.err_other], dpi=dpi)
    fig = figs.attribution(contracts.load_csv(smk.input.lds), contracts.load_csv(smk.input.agreement))
    save_figure(fig, [out.lds_png, *out.lds_other], dpi=dpi)


snake.run(snakemake, main)
