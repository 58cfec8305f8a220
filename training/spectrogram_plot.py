"""The picture logged at each validation: one validation excerpt, truth beside estimate."""

from __future__ import annotations

import torch


@torch.no_grad()
def validation_figure(separator, valid, step: int, index: int | None = None):
    """A matplotlib figure: mixture, then vocals and accompaniment, truth (left) vs estimate (right).

    valid: a semisep.training.data.ValidationSet; ``index`` picks the row (default: the first track's
    row with the loudest vocals, so the picture shows a voice).
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, and ~0.1 s less to import

    from semisep.pipeline.spectrogram import planes_log_magnitude

    if index is None:
        first = valid.track == valid.track[0]
        energy = valid.planes["vocals"][first].float().pow(2).sum(dim=(1, 2, 3))
        index = int(energy.argmax())
    row = {k: planes_log_magnitude(v[index:index + 1].float()) for k, v in valid.planes.items()}
    device = next(separator.parameters()).device

    separator.eval()
    est = separator(row["mixture"].to(device))[0].float().cpu()
    separator.train()
    panels = [("mixture", row["mixture"][0], None),
              ("vocals", row["vocals"][0], est[0]),
              ("accompaniment", row["accompaniment"][0], est[1])]
    vmax = float(max(p[1].max() for p in panels))
    fig = Figure(figsize=(8, 7))
    grid = fig.add_gridspec(3, 2)
    # five panels (no empty sixth axes), ticks only on the outer edges, titles at a fixed height:
    # matplotlib's tick and title layout is most of the figure's cost (paid at the end of training)
    for panel_row, (name, truth, estimate) in enumerate(panels):
        labels = ("input", None) if name == "mixture" else ("truth", "estimate")
        for col, (label, img) in enumerate(zip(labels, (truth, estimate))):
            if img is None:
                continue
            ax = fig.add_subplot(grid[panel_row, col])
            ax.imshow(img.numpy(), origin="lower", aspect="auto", vmin=0, vmax=vmax, cmap="magma", interpolation="nearest")
            ax.set_title(f"{name} ({label})", fontsize=9, y=1.0, pad=3)
            ax.locator_params(nbins=4)
            if panel_row == len(panels) - 1:
                ax.set_xlabel("frame")
            else:
                ax.set_xticks([])
            if col == 0:
                ax.set_ylabel("bin")
            else:
                ax.set_yticks([])
    fig.suptitle(f"validation excerpt {index}, step {step}: log1p |STFT|")
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.07, top=0.91, hspace=0.25, wspace=0.08)  # tight_layout: +0.1 s
    return fig
