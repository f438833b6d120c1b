"""Hessian spectrum (Lanczos top/bottom eigenvalues + SLQ quadrature) of one trained model."""

import numpy as np
import torch
import torch.nn.functional as F

from multirun import checkpoint, contracts, hessian, snake, streams


def loss_and_accuracy(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of logits (N, C) against labels (N,)."""
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).double().mean().item()


def main(smk):
    p = smk.params
    ds = contracts.load_dataset(smk.input.data)
    ckpt = checkpoint.load_checkpoint(smk.input.checkpoint)
    index = int(smk.wildcards.index)
    if index >= len(ckpt["seeds"]):
        raise contracts.ContractError(f"{smk.input.checkpoint}: holds {len(ckpt['seeds'])} models, "
                               f"model {index} was asked for (config key hessian.models)")
    model = checkpoint.load_member(ckpt, index)
    seed, recipe = ckpt["seeds"][index], ckpt["recipe"]
    y_clean = torch.from_numpy(ds["y_train"])
    y = streams.training_labels(y_clean, seed, recipe["label_noise"], ckpt["num_classes"])
    n = min(p.examples, len(y))
    x = torch.from_numpy(ds["x_train"])[:n]
    device = contracts.pick_device(snake.device(smk, "hessian"))
    op = hessian.HessianOperator(model, x, y[:n], batch_size=p.batch_size,
                                 params=p.param_selection, device=device)
    result = hessian.operator_spectrum(op, top_k=p.top_k, steps=p.steps, seed=p.seed,
                                       source=str(smk.input.checkpoint))
    density = hessian.slq(op, probes=p.slq["probes"], steps=p.slq["steps"], seed=p.seed)

    def logits(xs):
        return checkpoint.evaluate_shard(ckpt, torch.from_numpy(xs), batch_size=p.batch_size,
                                    device=device)[0][index]

    test_loss, test_acc = loss_and_accuracy(logits(ds["x_test"]), torch.from_numpy(ds["y_test"]))
    _, train_acc_clean = loss_and_accuracy(logits(ds["x_train"][:n]), y_clean[:n])
    print(f"top eigenvalues: {result['top'][:5]} ... loss {result['loss']:.4f}, "
          f"{int(result['num_hvps'])} + {int(density['num_hvps'])} HVPs; "
          f"test loss {test_loss:.4f} acc {test_acc:.4f}")
    spec = ckpt["model_spec"]
    contracts.save_npz(
        smk.output.spectrum, **result,
        slq_nodes=density["nodes"], slq_weights=density["weights"],
        trace_slq=np.float64(density["trace_slq"]),
        trace_hutchinson=np.float64(density["trace_hutchinson"]),
        trace_hutchinson_stderr=np.float64(density["trace_hutchinson_stderr"]),
        slq_second_moment=np.float64(density["second_moment"]),
        test_loss=np.float64(test_loss), test_accuracy=np.float64(test_acc),
        train_accuracy_clean=np.float64(train_acc_clean),
        width=np.int64(spec.get("width", 0)), depth=np.int64(spec.get("depth", 0)),
        seed=np.int64(seed), num_examples=np.int64(n),
        weight_decay=np.float64(recipe["weight_decay"]),
    )


snake.run(snakemake, main)
