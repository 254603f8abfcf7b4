"""What a run leaves on disk: both checkpoints (named as the original guide names them, plus a copy
per run) and the loss curve."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from trainer.training import EpochResult


def write_artifacts(
    models_dir: Path, run, run_dir: Path, best, final, epochs: list[EpochResult], classifier: str
) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    extra = {"run_id": run.id, "classifier_version": classifier, "parameters": run.parameters}
    for name, model in (("nutrition_model_best.pth", best), ("nutrition_model_final.pth", final)):
        torch.save(model.checkpoint(**extra), run_dir / name)
        shutil.copyfile(run_dir / name, Path(models_dir) / name)
    import matplotlib

    matplotlib.use("Agg")  # no screen: render the loss curve to a file
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    numbers = [e.epoch for e in epochs]
    axes.plot(numbers, [e.train_loss for e in epochs], label="train")
    axes.plot(numbers, [e.val_loss for e in epochs], label="validation")
    axes.set(xlabel="epoch", ylabel="Huber loss (standardised)", title=f"run {run.id[:8]}")
    axes.legend()
    figure.tight_layout()
    figure.savefig(run_dir / "loss_curve.png", dpi=80)
    plt.close(figure)
