"""``asd prepare``: from archives or the toy generator to a verified clip index.

Real DCASE years are handled by :mod:`asd.data.dcase`; the toy set is generated here and indexed by
scanning what is on disk, exactly as a real year is.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from asd.config import ConfigError
from asd.data.index import ClipIndexError, format_attributes, write_index
from asd.data.names import NameError_, parse_name

log = logging.getLogger(__name__)


def prepare(dataset: str, data_dir: str | Path, split: str = "all", machines: list[str] | None = None,
            mirror: str | None = None, archives: str | Path | None = None, strict: bool = False,
            progress: bool = True, toy_spec=None) -> Path:
    """Prepare ``dataset`` under ``data_dir``; returns the path of the written ``index.csv``."""
    data_dir = Path(data_dir)
    if dataset == "toy":
        if mirror or archives:
            raise ConfigError("--mirror/--archives do not apply to the built-in toy dataset (it is generated)")
        return prepare_toy(data_dir, split=split, machines=machines, spec=toy_spec, progress=progress)
    if dataset.startswith("dcase"):
        from asd.data.dcase import prepare_dcase

        return prepare_dcase(dataset, data_dir, split=split, machines=machines, mirror=mirror,
                             archives=Path(archives) if archives else None, strict=strict, progress=progress)
    from asd.data.years import get_year

    get_year(dataset)  # raises with the list of known datasets
    raise ConfigError(f"no preparation defined for {dataset!r}")


def check(dataset: str, data_dir: str | Path, strict: bool = False) -> list[str]:
    """``asd prepare --check``: verify an existing index; returns warning lines (errors raise)."""
    from asd.data.index import read_index

    if dataset.startswith("dcase"):
        from asd.data.dcase import check_index

        return check_index(dataset, Path(data_dir), strict=strict)
    read_index(data_dir, dataset)
    return []


def read_ground_truth_list(path: Path) -> dict[str, dict[str, str]]:
    """Official ``eval_data_list`` format -> ``{machine: {anonymised name: true name}}``.

    A line with one field starts a machine block; other lines are ``anonymised,true[,label]``.
    """
    out: dict[str, dict[str, str]] = {}
    current = None
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = [p.strip() for p in line.strip().split(",") if p.strip()]
        if not parts:
            continue
        if len(parts) == 1:
            current = parts[0]
            out.setdefault(current, {})
        elif current is None:
            raise ClipIndexError(f"{path}:{n}: a ground-truth row before any machine line")
        else:
            out[current][parts[0]] = parts[1]
    return out


def prepare_toy(data_dir: Path, split: str = "all", machines: list[str] | None = None, spec=None,
                progress: bool = True) -> Path:
    """Generate (or reuse) the toy set and index it from the files on disk.

    ``spec`` (a :class:`asd.data.toy.ToySpec`, or ``"key=value,..."``) is remembered in
    ``toy/toy_spec.json``: without one, an existing set keeps its size; with a different one, the old
    clips are removed and the set is generated anew.
    """
    import dataclasses
    import json
    import shutil

    from asd.data.toy import ToySpec, generate, parse_spec

    root = data_dir / "toy"
    spec_file = root / "toy_spec.json"
    old = ToySpec(**json.loads(spec_file.read_text())) if spec_file.exists() else None
    if isinstance(spec, str):
        spec = parse_spec(spec)
    spec = spec or old or ToySpec()
    if old is not None and old != spec:
        log.warning("toy spec changed (%s -> %s): regenerating %s", old, spec, root)
        for sub in ("dev_data", "eval_data"):
            shutil.rmtree(root / sub, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    spec_file.write_text(json.dumps(dataclasses.asdict(spec)))
    generate(root, spec, machines=machines, progress=progress)
    df = scan_layout(root, "toy", 2023, gt_file=root / "eval_data_list_toy.csv", machines=machines)
    if split != "all":
        df = df[df["split"] == split]
    return write_index(df, data_dir, "toy")


def scan_layout(root: Path, dataset: str, year: int, gt_file: Path | None = None,
                machines: list[str] | None = None) -> pd.DataFrame:
    """Index ``<root>/{dev,eval}_data/raw/<machine>/<phase>/*.wav`` (2022+ names), optionally only ``machines``.

    Raises:
        ClipIndexError: a WAV whose name fits no scheme (with the count and first examples), an
            anonymised clip without ground truth, or a ground-truth row without its clip.
    """
    gt = read_ground_truth_list(gt_file) if gt_file and gt_file.exists() else {}
    if machines:
        gt = {m: v for m, v in gt.items() if m in machines}
    rows, unknown, no_gt = [], [], []
    seen_gt: set[tuple[str, str]] = set()
    for split in ("dev", "eval"):
        for wav in sorted((root / f"{split}_data" / "raw").glob("*/*/*.wav")):
            machine, phase = wav.parent.parent.name, wav.parent.name
            if machines and machine not in machines:
                continue
            try:
                name = parse_name(wav.name)
                if name.domain is None:  # anonymised eval test clip: take the truth from the list
                    true = gt.get(machine, {}).get(wav.name)
                    if true is None:
                        no_gt.append(f"{machine}/{wav.name}")
                        continue
                    seen_gt.add((machine, wav.name))
                    name = parse_name(true)
            except NameError_:
                unknown.append(str(wav.relative_to(root)))
                continue
            rows.append(dict(path=str(wav.relative_to(root)), dataset=dataset, year=year, split=split,
                             machine=machine, section=name.section, domain=name.domain, phase=phase,
                             label=name.label, attributes=format_attributes(name.attributes), file=wav.name))
    if unknown:
        raise ClipIndexError(f"{len(unknown)} WAV file(s) with unrecognised names under {root} "
                             f"(first: {', '.join(unknown[:3])}); remove or rename them and re-run `asd prepare`")
    if no_gt:
        raise ClipIndexError(f"{len(no_gt)} eval test clip(s) have no ground truth in {gt_file} "
                             f"(first: {no_gt[0]}); re-run `asd prepare` to restore the list")
    missing = [f"{m}/{f}" for m, files in gt.items() for f in files if (m, f) not in seen_gt]
    if missing:
        raise ClipIndexError(f"{len(missing)} ground-truth row(s) in {gt_file} have no clip on disk "
                             f"(first: {missing[0]}); re-run `asd prepare` to regenerate the clips")
    if not rows:
        raise ClipIndexError(f"no clips found under {root}; run `asd prepare` again")
    return pd.DataFrame(rows)
