"""Classification targets of the classifier family, built from the clip index (docs/methods.md, classes).

Not to be confused with the index column ``label`` (normal | anomaly). Two schemes (``data.label``):
- ``main``: machine---section---attributes---domain (the meta-information ASDKit classifies);
- ``machine_section``: machine---section.

The class list is fitted on the **training** clips only, sorted as strings. Test-only classes (for
example a target-domain attribute value that only appears among test clips) get no output unit,
unlike ASDKit, whose head also carries never-trained units for classes that only occur in test clips.
Why: an output unit that never receives a positive example only learns to be pushed away, so it
carries no information, and building it requires reading test metadata at training time (hidden
on eval data). The backends work on embeddings, so test clips never need a class index.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from asd.config import ConfigError

SCHEMES = ("main", "machine_section")
SEP = "---"


def label_strings(rows: pd.DataFrame, scheme: str = "main") -> pd.Series:
    """One class string per row, e.g. ``fan---0---spd=1;blade=4---source``."""
    if scheme not in SCHEMES:
        raise ConfigError(f"unknown data.label {scheme!r}; choose one of {', '.join(SCHEMES)}")
    parts = [rows["machine"].astype(str), rows["section"].astype(int).astype(str)]
    if scheme == "main":
        parts += [rows["attributes"].fillna("").astype(str), rows["domain"].astype(str)]
    out = parts[0]
    for p in parts[1:]:
        out = out + SEP + p
    return out


def fit_classes(train_rows: pd.DataFrame, scheme: str = "main") -> list[str]:
    """Sorted class strings of the training clips (the classifier's outputs, in order)."""
    if len(train_rows) == 0:
        raise ConfigError("no training clips to build class labels from")
    return sorted(label_strings(train_rows, scheme).unique())


def encode(rows: pd.DataFrame, classes: list[str], scheme: str = "main") -> np.ndarray:
    """Class index per row (int64); -1 for rows whose class is not in ``classes`` (test-only)."""
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup.get(s, -1) for s in label_strings(rows, scheme)], dtype=np.int64)
