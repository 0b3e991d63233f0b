"""Figures: the UMAP view of a machine's embeddings (more plots in asd.report)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def umap_2d(X: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D UMAP of L2-normalised embeddings (cosine metric), train and test fitted jointly."""
    import warnings

    X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    if len(X) < 5:
        return np.zeros((len(X), 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # umap warns about n_jobs with a fixed random_state
        import umap

        reducer = umap.UMAP(n_neighbors=min(15, len(X) - 1), metric="cosine", random_state=seed)
        return reducer.fit_transform(X)


def plot_umap(xy: np.ndarray, rows: pd.DataFrame, title: str, out: Path) -> Path:
    """Two panels: left, training clips by domain; right, training clips faded and test clips by
    domain and normal/anomaly (anomaly = triangle; label-less clips grey)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5), sharex=True, sharey=True)
    tr = (rows["phase"] == "train").to_numpy()
    te = (rows["phase"] == "test").to_numpy()
    dom = rows["domain"].to_numpy()
    lab = rows["label"].to_numpy()
    ax = axes[0]
    for d, color in (("source", "tab:green"), ("target", "mediumseagreen")):
        sel = tr & (dom == d)
        ax.scatter(xy[sel, 0], xy[sel, 1], s=12 if d == "source" else 40, c=color,
                   marker="o" if d == "source" else "*", label=f"train {d} ({sel.sum()})", alpha=0.8)
    ax.set_title("training clips")
    ax.legend(loc="best", fontsize=8)
    ax = axes[1]
    ax.scatter(xy[tr, 0], xy[tr, 1], s=8, c="lightgrey", label="train", alpha=0.5)
    styles = [("source", "normal", "royalblue", "o"), ("source", "anomaly", "mediumvioletred", "^"),
              ("target", "normal", "orange", "o"), ("target", "anomaly", "red", "^")]
    for d, lb, color, marker in styles:
        sel = te & (dom == d) & (lab == lb)
        if sel.any():
            ax.scatter(xy[sel, 0], xy[sel, 1], s=14, c=color, marker=marker, label=f"test {d} {lb} ({sel.sum()})")
    unk = te & (lab == "unknown")
    if unk.any():
        ax.scatter(xy[unk, 0], xy[unk, 1], s=10, c="grey", marker="x", label=f"test unlabelled ({unk.sum()})")
    ax.set_title("test clips")
    ax.legend(loc="best", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def umap_figures(emb, out_dir: Path, title_prefix: str = "") -> list[Path]:
    """One UMAP figure per machine: ``out_dir/umap_<machine>.png``."""
    from tqdm import tqdm

    paths = []
    machines = sorted(emb.rows["machine"].unique())
    for m in tqdm(machines, desc="umap", unit="machine", leave=False):
        sel = (emb.rows["machine"] == m).to_numpy()
        rows = emb.rows[sel].reset_index(drop=True)
        xy = umap_2d(emb.embedding[sel])
        paths.append(plot_umap(xy, rows, f"{title_prefix}{m}", out_dir / f"umap_{m}.png"))
    return paths
