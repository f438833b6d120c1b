# multirun: many training runs -> logits -> ensemble kernel / k-NN, Hessian spectra -> figures.
# The DAG and file contracts are described in README.md and docs/.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/logits.smk"
include: "workflow/rules/kernel.smk"
include: "workflow/rules/knn.smk"
include: "workflow/rules/published.smk"
include: "workflow/rules/hessian.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/studies.smk"
include: "workflow/rules/check.smk"
include: "workflow/rules/sweeps.smk"
include: "workflow/rules/subsets.smk"


rule all:
    default_target: True
    input:
        default_targets(),


rule width_sweep:
    input:
        figure_paths("width_sweep_full"),


rule width_depth:
    input:
        figure_paths("width_depth"),


rule sweeps:
    input:
        [path for name in SWEEP_POINTS for path in sweep_targets(name)],


rule batchnorm:
    input:
        sweep_targets("batchnorm"),


rule memorization:
    input:
        study_figures("memorization"),


rule label_noise:
    input:
        study_figures("label_noise"),


rule label_errors:
    input:
        study_figures("label_errors"),


rule subsets:
    input:
        subsets_outputs,
