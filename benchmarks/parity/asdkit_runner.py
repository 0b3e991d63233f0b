"""The ASDKit side: its own entry points (``python -m asdkit.bin.<stage>``) on the patched copy.

The stages and their order follow ASDKit's recipe scripts (``jobs/asd/recipe/dis_any.sh`` and
``ae.sh``): label (once), train (once for a shared discriminative model, once per machine for the
AE), then per machine extract -> score -> evaluate. Hydra overrides replace what those scripts and
configs fix for a GPU and a DCASE year: the accelerator, the crop length (``sec``, otherwise the
year's 18 s for ``dcase2023``) and, optionally, the number of epochs.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from asdkit_data import DCASE, ParityError
from measure import Measured, run_measured, tail

# asd backend name -> the score column ASDKit writes for the same backend and settings
# (config/score/experiments/default.yaml; ``recon`` is the AE's own score, no backend).
BACKEND_COLUMNS = {
    "knn": "AS-Knn-1-1-0.0-0-main",
    "knn_smote": "AS-Knn-1-1-0.2-2-cosine-main",
    "knn_kmeans": "AS-Kmeans-16-cosine-main",
    "knn_rescale": "AS-KnnRescale-1-4-cosine-main",
    "recon": "AS-recon",
}
NAME = "parity"  # ASDKit's result folder level ``name``


@dataclass
class Asdkit:
    """A patched ASDKit copy (``src``), its formatted data (``data_dir``) and results folder."""

    src: Path
    data_dir: Path
    result_dir: Path
    python: str
    env: dict
    device: str = "cpu"

    def _run(self, module: str, args: list[str], log: Path) -> Measured:
        m = run_measured([self.python, "-m", f"asdkit.bin.{module}", *args], self.src, self.env, log)
        if m.rc != 0:
            raise ParityError(f"ASDKit {module} failed (exit {m.rc}); end of {log}:\n{tail(log)}")
        return m

    def _common(self, recipe: str, seed: int, data: bool = True) -> list[str]:
        """Overrides every stage takes (score and evaluate read no audio: no ``data_dir`` key)."""
        return [f"name={NAME}", f"version={recipe}", f"dcase={DCASE}", f"seed={seed}",
                f"result_dir={self.result_dir}"] + ([f"data_dir={self.data_dir}"] if data else [])

    def version_dir(self, recipe: str, seed: int) -> Path:
        return self.result_dir / NAME / DCASE / recipe / str(seed)

    def labels(self, log: Path) -> dict:
        """Regenerate ``labels/dcase2023/main.json`` from the formatted train and test file names.

        The checkout's own label file (real DCASE 2023 names) is replaced in the copy: ASDKit fits its
        class list on the names of every train and test clip of the year and looks clips up by path.
        """
        path = self.src / "labels" / DCASE / "main.json"
        path.unlink(missing_ok=True)  # the label step refuses to overwrite
        self._run("label", [f"experiments={DCASE}", f"data_dir={self.data_dir}"], log)
        info = json.loads(path.read_text())
        return {k: info[k] for k in ("num_class", "num_class_train", "num_class_test")}

    def _trainer(self, epochs: int | None) -> list[str]:
        acc = ["trainer.accelerator=cpu", "trainer.devices=1"] if self.device == "cpu" else \
            ["trainer.accelerator=gpu", "trainer.devices=[0]"]  # CUDA path: untested here (no GPU)
        return acc + ([f"trainer.max_epochs={epochs}"] if epochs is not None else [])

    def train(self, recipe: str, seed: int, machines: list[str], sec: float, epochs: int | None,
              logs: Path) -> list[Measured]:
        """Train from scratch (ASDKit skips training when checkpoints exist, so they are removed first).

        The AE (``ae``) trains one model per machine, one process each; other recipes one shared model.
        """
        shutil.rmtree(self.version_dir(recipe, seed), ignore_errors=True)
        base = [f"experiments={recipe}", *self._common(recipe, seed), *self._trainer(epochs)]
        if recipe == "ae":  # its validation loader (the machine's test clips, AUC monitoring) crops to sec
            return [self._run("train", [*base, f"machine={m}", f"datamodule.valid.collator.sec={sec}"],
                              logs / f"train-{m}.log") for m in machines]
        return [self._run("train", [*base, f"datamodule.sec={sec}"], logs / "train.log")]

    def score_machines(self, recipe: str, seed: int, machines: list[str], sec: float, logs: Path) -> list[Measured]:
        """extract -> score -> evaluate for every machine (ASDKit's per-machine loop)."""
        device = "cpu" if self.device == "cpu" else "cuda:0"
        restore, backends = ("restore/machinewise", "no_backend") if recipe == "ae" else ("restore/shared", "default")
        out = []
        for m in machines:
            c = ["infer_ver=last", f"machine={m}", "overwrite=True", *self._common(recipe, seed, data=False)]
            out.append(self._run("extract", [f"experiments={restore}", *c, f"data_dir={self.data_dir}",
                                             f"device={device}", f"datamodule.train.collator.sec={sec}"],
                                 logs / f"extract-{m}.log"))
            out.append(self._run("score", [f"experiments={backends}", *c], logs / f"score-{m}.log"))
            out.append(self._run("evaluate", c, logs / f"evaluate-{m}.log"))
        return out

    def scores(self, recipe: str, seed: int, machines: list[str], layout: pd.DataFrame) -> pd.DataFrame:
        """Per-clip ASDKit scores joined to the asd identity of each clip (``split, machine, file``).

        One column per ASDKit score column (``AS-...``), plus ASDKit's own ``section, is_normal,
        is_target`` parsed from the file names (checked against the index by the caller).
        """
        frames = []
        for m in machines:
            f = self.version_dir(recipe, seed) / "output" / "last" / m / "test_score.csv"
            df = pd.read_csv(f)
            df["asdkit_path"] = ["/".join(p.split("/")[-5:]) for p in df["path"]]
            frames.append(df.drop(columns=["path"]))
        df = pd.concat(frames, ignore_index=True)
        merged = df.merge(layout, on="asdkit_path", how="left", validate="one_to_one")
        if merged["file"].isna().any():
            raise ParityError(f"ASDKit scored {int(merged['file'].isna().sum())} clips the layout does not know")
        return merged

    def own_metrics(self, recipe: str, seed: int, machines: list[str]) -> dict[str, dict[str, dict[str, float]]]:
        """ASDKit's own per-machine metrics (``test_evaluate.csv``): {machine: {column: {metric: v}}}."""
        out = {}
        for m in machines:
            df = pd.read_csv(self.version_dir(recipe, seed) / "output" / "last" / m / "test_evaluate.csv")
            out[m] = {r["backend"]: {k[2:]: float(v) for k, v in r.items() if k.startswith("0_")}
                      for r in df.to_dict("records")}
        return out
