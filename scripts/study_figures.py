"""Figures of one study: memorization (curves, extremes), label_noise, label_errors."""

from multirun import contracts, snake
from multirun.plots import studies as figs
from multirun.plots.style import save_figure


def main(smk):
    study, dpi, out = smk.params.study, smk.params.dpi, smk.output
    if study == "memorization":
        p = contracts.load_npz(smk.input.pcorrect, ("variants", "epochs"))
        variants, epochs = p["variants"].tolist(), p["epochs"].tolist()
        rows = len(variants) * len(epochs)
        models = int(contracts.load_table(smk.input.table, "memorization", rows=rows)[0]["models"])
        fig = figs.memorization_curves(p, variants, epochs, models)
        save_figure(fig, [out.curves_png, *out.curves_other], dpi=dpi)
        ds = contracts.load_dataset(smk.input.data)
        e, shown = min(epochs), smk.params.shown
        fig = figs.memorization_extremes(
            p[f"p_{shown}_e{e}"], ds["x_train"], ds["y_train"], smk.params.examples,
            classes=ds["classes"].tolist() if "classes" in ds else None,
            images=ds.get("images_train"),
            title=f"{shown} data after {e} epoch{'s' if e != 1 else ''}: hardest (top) and "
                  f"easiest (bottom) training examples, P = fraction of seeds correct")
        save_figure(fig, [out.extremes_png, *out.extremes_other], dpi=dpi)
    elif study == "label_noise":
        cfg = smk.config["studies"]["label_noise"]
        rows = len(cfg["architectures"]) * len(cfg["alphas"]) * cfg["seeds"]
        save_figure(figs.label_noise_accuracy(contracts.load_table(smk.input.table, study,
                                                                   rows=rows)),
                    [out.png, *out.other], dpi=dpi)
    else:
        curves = contracts.load_npz(smk.input.curves, ("noise", "n_models"))
        save_figure(figs.label_errors_pr(curves, contracts.load_table(smk.input.table, study)),
                    [out.png, *out.other], dpi=dpi)


snake.run(snakemake, main)
