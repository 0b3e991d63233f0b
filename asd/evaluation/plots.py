"""Figures: the UMAP view of a machine's embeddings, ROC curves and anomaly-score histograms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, title: str, out: Path, dpi: int = 90) -> Path:
    """Title, lay out, write ``out`` (creating its folder) and free the figure."""
    import matplotlib.pyplot as plt

    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


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
    return _save(fig, title, out)


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


# --- ROC curves and score histograms of an evaluate run ------------------------------------------

# Which clips each curve uses: the subsets of the year's official AUCs (asd.evaluation.metrics).
_ROC_CURVES = {
    "hmean2022": [("source (source normals + all anomalies)", "source", True),
                  ("target (target normals + all anomalies)", "target", True)],
    "hmean2021": [("source", "source", False), ("target", "target", False)],
    "amean2020": [("source", "source", False)],
}


def plot_roc(scores: pd.DataFrame, rule: str, title: str, out: Path) -> Path:
    """ROC curves of one machine: one panel per section, one curve per domain (the clips of that
    domain's official AUC) plus all clips; the pAUC range FPR <= 0.1 is shaded."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _pyplot()
    lab = scores[scores["label"] != "unknown"]
    sections = sorted(lab["section"].unique())
    cols = min(len(sections), 4) or 1
    rows = max(1, -(-len(sections) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.8 * rows), squeeze=False)
    for ax in axes.flat[len(sections):]:
        ax.axis("off")
    for ax, sec in zip(axes.flat, sections):
        g = lab[lab["section"] == sec]
        y, dom, s = (g["label"] == "anomaly").to_numpy(), g["domain"].to_numpy(), g["score"].to_numpy()
        curves = [(name, ((dom == d) & ~y) | (y if mix else (dom == d) & y)) for name, d, mix in _ROC_CURVES[rule]]
        for name, sel in [*curves, ("all clips", np.ones(len(y), bool))]:
            if y[sel].any() and (~y[sel]).any():
                fpr, tpr, _ = roc_curve(y[sel], s[sel])
                ax.plot(fpr, tpr, label=f"{name}: AUC {roc_auc_score(y[sel], s[sel]):.3f}")
        ax.axvspan(0, 0.1, color="grey", alpha=0.15, label="pAUC range (FPR <= 0.1)")
        ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"section {int(sec):02d}",
               xlim=(0, 1), ylim=(0, 1.01))
        ax.legend(loc="lower right", fontsize=7)
    return _save(fig, title, out)


def plot_score_hist(scores: pd.DataFrame, threshold: float | None, title: str, out: Path) -> Path:
    """Anomaly-score histograms of one machine's test clips: a panel per domain, normal vs anomaly
    (unlabelled clips in grey), the decision threshold as a dashed line."""
    plt = _pyplot()
    s = scores["score"].to_numpy(dtype=float)
    finite = s[np.isfinite(s)]
    bins = np.histogram_bin_edges(np.r_[finite, [threshold] if threshold is not None else []], bins=30)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    for ax, d in zip(axes, ("source", "target")):
        g = scores[scores["domain"] == d]
        for lb, color in (("normal", "royalblue"), ("anomaly", "crimson"), ("unknown", "grey")):
            v = g.loc[g["label"] == lb, "score"].to_numpy(dtype=float)
            if len(v):
                name = "unlabelled" if lb == "unknown" else lb
                ax.hist(v, bins=bins, alpha=0.55, color=color, label=f"{name} ({len(v)})")
        if threshold is not None:
            ax.axvline(threshold, color="black", ls="--", label=f"threshold {threshold:.4g}")
        ax.set(title=f"{d} domain", xlabel="anomaly score (higher = more anomalous)", ylabel="clips")
        ax.legend(fontsize=8)
    return _save(fig, title, out)


def evaluation_figures(scores: pd.DataFrame, thresholds: dict[str, float], rule: str, out_dir: Path,
                       title_prefix: str = "") -> list[Path]:
    """``roc_<machine>.png`` and ``hist_<machine>.png`` for every machine of an evaluate run."""
    paths = []
    for m, g in scores.groupby("machine"):
        if (g["label"] != "unknown").any():
            paths.append(plot_roc(g, rule, f"{title_prefix}{m}: ROC", out_dir / f"roc_{m}.png"))
        paths.append(plot_score_hist(g, thresholds.get(m), f"{title_prefix}{m}: anomaly scores",
                                     out_dir / f"hist_{m}.png"))
    return paths


def plot_heatmap(mean: pd.DataFrame, std: pd.DataFrame, title: str, out: Path) -> Path:
    """A results heat map like ASDKit's figure: ``mean`` (fractions, rows x columns) as colour in %,
    each cell annotated with the mean and, below it, ``(std)`` over seeds."""
    plt = _pyplot()
    vals = 100 * mean.to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(1.3 * vals.shape[1] + 3.5, 0.55 * vals.shape[0] + 1.8))
    finite = vals[np.isfinite(vals)]
    im = ax.imshow(np.ma.masked_invalid(vals), cmap="viridis", aspect="auto",
                   vmin=finite.min() if finite.size else 0, vmax=finite.max() if finite.size else 100)
    mid = (np.nanmax(vals) + np.nanmin(vals)) / 2 if finite.size else 50
    for i in range(vals.shape[0]):
        for j in range(vals.shape[1]):
            if np.isfinite(vals[i, j]):
                s = std.iat[i, j]
                label = f"{vals[i, j]:.2f}" + ("" if np.isnan(s) else f"\n({100 * s:.2f})")
                ax.text(j, i, label, ha="center", va="center", fontsize=8,
                        color="black" if vals[i, j] > mid else "white")
    ax.set_xticks(range(vals.shape[1]), [str(c) for c in mean.columns], rotation=30, ha="right")
    ax.set_yticks(range(vals.shape[0]), list(mean.index))
    fig.colorbar(im, ax=ax, label="official score (%)")
    ax.set_title(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
