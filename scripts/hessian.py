"""Hessian spectrum (Lanczos top/bottom eigenvalues + SLQ density) of one trained model."""

import numpy as np
import torch
import torch.nn.functional as F

from multirun import hessian, io, snake, train
from multirun.snake import run


@torch.no_grad()
def evaluate(model, x, y, batch_size, device):
    """Mean cross-entropy and accuracy of ``model`` on (x, y), in batches on ``device``."""
    model = model.to(device)
    loss = correct = 0.0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size].to(device), y[start : start + batch_size].to(device)
        logits = model(xb)
        loss += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    model.cpu()
    return loss / len(x), correct / len(x)


def main(smk):
    p = smk.params
    ds = io.load_dataset(smk.input.data)
    ckpt = train.load_checkpoint(smk.input.checkpoint)
    index = int(smk.wildcards.index)
    if index >= len(ckpt["seeds"]):
        raise io.ContractError(f"{smk.input.checkpoint}: holds {len(ckpt['seeds'])} models, "
                               f"model {index} was asked for (config key hessian.models)")
    model = train.load_member(ckpt, index)
    seed, recipe = ckpt["seeds"][index], ckpt["recipe"]
    y_clean = torch.from_numpy(ds["y_train"])
    y = train.training_labels(y_clean, seed, recipe["label_noise"], ckpt["num_classes"])
    n = min(p.examples, len(y))
    x = torch.from_numpy(ds["x_train"])[:n]
    device = io.pick_device(snake.device(smk, "hessian"))
    result = hessian.spectrum(
        model, x, y[:n], top_k=p.top_k, steps=p.steps, batch_size=p.batch_size,
        params=p.params, seed=p.seed, device=device, source=str(smk.input.checkpoint),
    )
    op = hessian.HessianOperator(model, x, y[:n], batch_size=p.batch_size, params=p.params,
                                 device=device)
    density = hessian.slq(op, probes=p.slq.get("probes", 4), steps=p.slq.get("steps", 60),
                          seed=p.seed)
    test_loss, test_acc = evaluate(model, torch.from_numpy(ds["x_test"]),
                                   torch.from_numpy(ds["y_test"]), p.batch_size, device)
    _, train_acc_clean = evaluate(model, x, y_clean[:n], p.batch_size, device)
    print(f"top eigenvalues: {result['top'][:5]} ... loss {result['loss']:.4f}, "
          f"{int(result['num_hvps'])} HVPs; test loss {test_loss:.4f} acc {test_acc:.4f}")
    io.save_npz(
        smk.output.spectrum, **result,
        slq_nodes=density["nodes"], slq_weights=density["weights"],
        trace_slq=np.float64(density["trace_slq"]),
        trace_hutchinson=np.float64(density["trace_hutchinson"]),
        trace_hutchinson_stderr=np.float64(density["trace_hutchinson_stderr"]),
        slq_second_moment=np.float64(density["second_moment"]),
        test_loss=np.float64(test_loss), test_accuracy=np.float64(test_acc),
        train_accuracy_clean=np.float64(train_acc_clean),
        width=np.int64(ckpt["model_spec"].get("width", 0)), seed=np.int64(seed),
        num_examples=np.int64(n), weight_decay=np.float64(recipe["weight_decay"]),
    )


run(snakemake, main)
