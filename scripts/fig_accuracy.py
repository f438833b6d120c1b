"""Figure: kernel k-NN vs logit ensemble vs single model, against the number of models."""

from multirun import contracts, knn, snake
from multirun.headline import knn_series
from multirun.plots.neighbours import accuracy_vs_models
from multirun.plots.style import save_figure


def main(smk):
    rows = contracts.load_table(smk.input.scores, "scores", rows=knn.score_rows(smk.config))
    fig = accuracy_vs_models(rows, knn=knn_series(smk.params.k))  # the write-up's two
    save_figure(fig, [smk.output.png, *smk.output.other], dpi=smk.params.dpi)


snake.run(snakemake, main)
