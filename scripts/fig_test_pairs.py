"""Figure: the most similar test-to-test pairs under the kernel (near-duplicates in the test set)."""

import numpy as np

from multirun import contracts, kernel, snake
from multirun.plots import neighbours as nplots
from multirun.plots.style import save_figure


def main(smk):
    data = contracts.load_dataset(smk.input.data)
    x, y = data["x_test"], data["y_test"]
    nb = kernel.load_neighbours(smk.input.neighbours, num_keys=len(y), extra=("sizes",))
    index, similarity = nb["index"][0], nb["similarity"][0]
    # a mutual pair (i's nearest is j and j's is i) is shown once, from its smaller index
    rows = np.arange(len(y))
    keep = rows[~((index[index[:, 0], 0] == rows) & (index[:, 0] < rows))]
    images = data.get("images_test")
    classes = [str(c) for c in data["classes"]] if "classes" in data else None
    fig = nplots.similar_pairs(index[keep], similarity[keep], x[keep], x, ranks=smk.params.ranks,
                               y_test=y[keep], y_train=y, classes=classes,
                               images_test=None if images is None else images[keep],
                               images_train=images)
    how = ("upper: test example, lower: its nearest other test example" if images is not None
           else "black: test example, orange dashed: its nearest other test example")
    fig.suptitle(f"Most similar test-to-test pairs under the kernel of {int(nb['sizes'][0])} "
                 f"models, ranks {smk.params.ranks[0]}-{smk.params.ranks[1]}, each pair once\n"
                 f"({how}; s = kernel similarity, labels of the two)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, [smk.output.png, *smk.output.other], dpi=smk.params.dpi)


snake.run(snakemake, main)
