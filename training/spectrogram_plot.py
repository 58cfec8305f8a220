"""The picture logged at each validation: one validation excerpt, truth beside estimate."""

from __future__ import annotations

import torch


@torch.no_grad()
def validation_figure(separator, valid: dict[str, torch.Tensor], step: int, index: int = 0):
    """A matplotlib figure: mixture, then vocals and accompaniment, truth (left) vs estimate (right).

    valid: mixture, vocals, accompaniment (rows, F, T) log-magnitudes; ``index`` picks the row.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    separator.eval()
    est = separator(valid["mixture"][index:index + 1])[0].float().cpu()
    separator.train()
    panels = [("mixture", valid["mixture"][index].cpu(), None),
              ("vocals", valid["vocals"][index].cpu(), est[0]),
              ("accompaniment", valid["accompaniment"][index].cpu(), est[1])]
    vmax = float(max(p[1].max() for p in panels))
    fig, axes = plt.subplots(3, 2, figsize=(8, 7), sharex=True, sharey=True)
    for row, (name, truth, estimate) in enumerate(panels):
        labels = ("input", None) if name == "mixture" else ("truth", "estimate")
        for col, (label, img) in enumerate(zip(labels, (truth, estimate))):
            ax = axes[row, col]
            if img is None:
                ax.axis("off")
                continue
            ax.imshow(img.numpy(), origin="lower", aspect="auto", vmin=0, vmax=vmax, cmap="magma")
            ax.set_title(f"{name} ({label})", fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("frame")
    for ax in axes[:, 0]:
        ax.set_ylabel("bin")
    fig.suptitle(f"validation excerpt {index}, step {step}: log1p |STFT|")
    fig.tight_layout()
    return fig
