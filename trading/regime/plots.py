"""Training plots: BIC vs K, transition-matrix heatmap, state timeline over price."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trading.regime.train import TrainReport


def write_plots(report: TrainReport, directory: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    paths = []

    fig, ax = plt.subplots(figsize=(6, 4))
    ok = [c for c in report.candidates if c.ok]
    ax.scatter([c.k for c in ok], [c.val_bic for c in ok], color="0.6", label="restart")
    ks = sorted({c.k for c in ok})
    ax.plot(ks, [min(c.val_bic for c in ok if c.k == k) for k in ks], "o-", label="best per K")
    ax.set_xlabel("K (states)")
    ax.set_ylabel("BIC on the validation window")
    ax.set_xticks(ks)
    ax.legend()
    ax.set_title("Model selection")
    paths.append(directory / "bic_vs_k.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=90)
    plt.close(fig)

    k = report.transmat.shape[0]
    fig, ax = plt.subplots(figsize=(1.2 * k + 2, 1.2 * k + 1))
    im = ax.imshow(report.transmat, cmap="viridis", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            value = report.transmat[i, j]
            ax.text(
                j, i, f"{value:.3f}", ha="center", va="center", color="w" if value < 0.5 else "k"
            )
    ax.set_xlabel("to state")
    ax.set_ylabel("from state")
    ax.set_title("Transition matrix (per grid step)")
    fig.colorbar(im, ax=ax)
    paths.append(directory / "transition_matrix.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=90)
    plt.close(fig)

    t = report.timeline
    if len(t.get("ts_ns", [])):
        hours = (t["ts_ns"] - t["ts_ns"][0]) / 3.6e12
        fig, ax = plt.subplots(figsize=(10, 4))
        ax.plot(hours, t["price"], color="0.75", linewidth=0.6, zorder=1)
        sc = ax.scatter(
            hours, t["price"], c=t["state"], s=2, cmap="coolwarm", vmin=0, vmax=k - 1, zorder=2
        )
        fig.colorbar(sc, ax=ax, label="state (0 = calmest)", ticks=np.arange(k))
        ax.set_xlabel("hours from start")
        ax.set_ylabel(f"{t['symbol'][0]} price")
        ax.set_title("Decoded state (forward filter) over price")
        paths.append(directory / "state_timeline.png")
        fig.tight_layout()
        fig.savefig(paths[-1], dpi=90)
        plt.close(fig)
    return paths
