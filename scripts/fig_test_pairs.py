"""Figure: the most similar test-to-test pairs under the kernel (near-duplicates in the test set)."""

import numpy as np

from multirun import io, kernel
from multirun.plots import neighbours as nplots
from multirun.plots.style import save_figure
from multirun.snake import run


def main(smk):
    data = io.load_dataset(smk.input.data)
    x, y = data["x_test"], data["y_test"]
    nb = kernel.load_neighbours(smk.input.neighbours, num_keys=len(y), extra=("sizes",))
    index, similarity = nb["index"][0], nb["similarity"][0].copy()
    # a mutual pair (i's nearest is j and j's is i) is shown once, from its smaller index
    first = index[:, 0]
    similarity[(index[first, 0] == np.arange(len(y))) & (first < np.arange(len(y))), 0] = -np.inf
    images = data.get("images_test")
    classes = [str(c) for c in data["classes"]] if "classes" in data else None
    fig = nplots.similar_pairs(index, similarity, x, x, ranks=smk.params.ranks,
                               y_test=y, y_train=y, classes=classes, images_test=images,
                               images_train=images)
    fig.suptitle(f"Most similar test-to-test pairs under the kernel of {int(nb['sizes'][0])} "
                 f"models, ranks {smk.params.ranks[0]}-{smk.params.ranks[1]} (each pair once; "
                 "upper: test example, lower: its nearest other test example)", fontsize=9)
    save_figure(fig, [smk.output.png, *smk.output.other], dpi=smk.params.dpi)


run(snakemake, main)
