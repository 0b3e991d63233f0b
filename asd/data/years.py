"""Per-year facts in one table: machine types, sections, archives, ground truth, clip length, metric rule.

Sources: docs/data.md (machines, sections, counts, names, Zenodo records, ground-truth files, each
with the organisers' publication it comes from). The metric rule names are keys of
:data:`asd.evaluation.metrics.RULES`.

On disk a year lives in ``<data_dir>/<dataset>/``: ``archives/`` (downloads and ground-truth files),
``dev_data/raw/<machine>/<phase>/`` and ``eval_data/raw/<machine>/<phase>/`` (archives unpacked as
distributed; 2021 keeps its ``source_test/`` and ``target_test/`` folders, 2025 its ``supplemental/``)
and ``index.csv``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from asd.config import ConfigError

ZENODO = "https://zenodo.org/{kind}/{record}/files/{name}"
RAW = "https://raw.githubusercontent.com/{repo}/main/{path}"
BASELINE = "nttcslab/dcase2023_task2_baseline_ae"
TOOLKIT = "TakuyaFujimura/dcase-asd-toolkit"
EVAL2022 = "Kota-Dohi/dcase2022_evaluator"


@dataclass(frozen=True)
class Remote:
    """One file to fetch: ``name`` is its local (and ``--mirror``) file name, ``url`` its official location.

    ``kind``: ``dev`` | ``eval_train`` | ``eval_test`` (archives) or ``gt_list`` | ``gt_domain`` |
    ``gt_attributes`` (ground truth). ``machine`` is empty for files that cover every machine.
    """

    name: str
    url: str
    kind: str
    machine: str = ""
    split: str = "eval"  # the --split that needs it

    @property
    def is_archive(self) -> bool:
        return self.kind in ("dev", "eval_train", "eval_test")


@dataclass(frozen=True)
class Year:
    name: str  # dataset name used on the command line
    year: int  # whose evaluation rules apply
    dev_machines: tuple[str, ...]
    eval_machines: tuple[str, ...]
    clip_seconds: float  # every clip is tiled or cropped to this length (ASDKit's per-year maximum)
    rule: str  # official score rule, see asd.metrics.RULES
    sample_rate: int = 16000
    extra: dict = field(default_factory=dict)
    channels: int = 1  # channels in the distributed WAVs
    channel: int = 0  # the channel loaders use (2026 is stereo; channel 0 is the former mono microphone)
    dev_sections: tuple[int, ...] = (0,)
    eval_sections: tuple[int, ...] = (0,)
    section_overrides: dict = field(default_factory=dict)  # machine -> (dev sections, eval sections), 2020
    files: tuple[Remote, ...] = ()  # archives and ground-truth files, official URLs
    eval_test_published: bool = True  # False: eval test clips are indexed with label 'unknown'
    hidden_attributes: dict = field(default_factory=dict)  # split -> machines released with noAttribute
    counts: dict = field(default_factory=dict)  # official counts, see expected_counts()
    # Approximate download per split in GB, ESTIMATED from clip counts x clip length x 32 kB/s (16-bit,
    # 16 kHz; x2 for stereo); not verified against the Zenodo records.
    download_gb: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    # Clip durations accepted (asd.data.verify): SPEC.md gives no minimum and the per-machine lengths
    # are unverified, so the bounds are ours: at least 1 s, at most 1.5 x ASDKit's per-year maximum.
    min_seconds: float = 1.0
    max_clip_seconds: float | None = None  # None: 1.5 x clip_seconds

    @property
    def max_seconds(self) -> float:
        return self.max_clip_seconds or 1.5 * self.clip_seconds

    def expect(self, max_seconds: float | None = None):
        """What every clip of this year must be (:class:`asd.data.audio.Expect`); ``max_seconds`` raises the limit."""
        from asd.data.audio import Expect

        return Expect(self.sample_rate, self.channels, self.min_seconds, max_seconds or self.max_seconds)

    def max_member_bytes(self, max_seconds: float | None = None) -> int:
        """The largest archive member accepted: a float32 WAV of the longest clip, plus 1 MB for headers."""
        return int((max_seconds or self.max_seconds) * self.sample_rate * self.channels * 4) + (1 << 20)

    def max_archive_bytes(self) -> int:
        """The largest archive accepted, unpacked: twice the year's largest per-split download estimate."""
        return int(2 * max(self.download_gb.values() or [1.0]) * 1e9)

    def sections(self, split: str, machine: str) -> tuple[int, ...]:
        if machine in self.section_overrides:
            dev, ev = self.section_overrides[machine]
            return dev if split == "dev" else ev
        return self.dev_sections if split == "dev" else self.eval_sections

    def machines(self, split: str) -> tuple[str, ...]:
        return self.dev_machines if split == "dev" else self.eval_machines

    def archives(self) -> list[Remote]:
        return [f for f in self.files if f.is_archive]


def _zenodo(kind: str, record: int, name: str, machine: str, what: str, split: str = "eval") -> Remote:
    return Remote(name, ZENODO.format(kind=kind, record=record, name=name), what, machine, split)


def _archives(dev: tuple[str, ...], ev: tuple[str, ...], dev_pat: str, train_pat: str, test_pat: str | None,
              records: tuple[int, int, int | None], kind: str | tuple[str, str, str] = "record",
              renamed: dict[str, str] | None = None) -> tuple[Remote, ...]:
    """Archive list of a year; ``renamed`` maps a pattern-made name to the published one (``_r2``)."""
    renamed = renamed or {}
    kd, ktr, kte = (kind,) * 3 if isinstance(kind, str) else kind  # Zenodo path: record/ or records/
    out = [_zenodo(kd, records[0], renamed.get(n, n), m, "dev", "dev") for m in dev for n in [dev_pat.format(m)]]
    out += [_zenodo(ktr, records[1], renamed.get(n, n), m, "eval_train") for m in ev for n in [train_pat.format(m)]]
    if test_pat:
        out += [_zenodo(kte, records[2], test_pat.format(m), m, "eval_test") for m in ev]
    return tuple(out)


def _gt_list(year: int, repo: str = BASELINE, path: str | None = None) -> Remote:
    name = f"eval_data_list_{year}.csv"
    return Remote(name, RAW.format(repo=repo, path=path or f"datasets/{name}"), "gt_list")


def _gt_attributes(tag: str, table: dict[str, dict[str, tuple[str, ...]]]) -> tuple[Remote, ...]:
    """Hidden-attribute correspondence files of the baseline repository, flat names for --mirror.

    ``table``: split -> machine -> phases that have a published file.
    """
    out = []
    for split, machines in table.items():
        for m, phases in machines.items():
            for ph in phases:
                base = f"attributes_00_{ph}_correspondence.csv"
                path = f"datasets/ground_truth_attributes/{tag}/{split}_data/{m}/{base}"
                out.append(Remote(f"{split}_data_attr_{m}_{base}", RAW.format(repo=BASELINE, path=path),
                                  "gt_attributes", m, split))
    return tuple(out)


def _gt_domain_2022(machines: tuple[str, ...]) -> tuple[Remote, ...]:
    return tuple(
        Remote(f"ground_truth_{m}_section_{s:02d}_test.csv",
               RAW.format(repo=EVAL2022, path=f"ground_truth_domain/ground_truth_{m}_section_{s:02d}_test.csv"),
               "gt_domain", m)
        for m in machines for s in (3, 4, 5)
    )


# ---- official counts (docs/data.md, official counts), used by check_index -------------------------------------------
# key: (split, machine or '*', section or '*', domain, phase, label) -> count; '*' = every machine/section.

def _balanced(split: str, phase: str, per: int, domains=("source", "target")) -> dict:
    return {(split, "*", "*", d, phase, lab): per for d in domains for lab in ("normal", "anomaly")}


def _train(split: str, source: int, target: int) -> dict:
    return {(split, "*", "*", "source", "train", "normal"): source,
            (split, "*", "*", "target", "train", "normal"): target}


def _counts_2020() -> dict:
    per_id = {  # eval test normal/anomaly per machine ID
        "fan": {1: (100, 326), 3: (100, 358), 5: (109, 349)},
        "pump": {1: (100, 116), 3: (100, 113), 5: (100, 248)},
        "slider": {1: (100, 178), 3: (100, 178), 5: (100, 178)},
        "valve": {1: (100, 120), 3: (100, 120), 5: (100, 400)},
        "ToyCar": {s: (250, 265) for s in (5, 6, 7)},
        "ToyConveyor": {s: (200, 355) for s in (4, 5, 6)},
    }
    out = {}
    for m, secs in per_id.items():
        for s, (n, a) in secs.items():
            out[("eval", m, s, "source", "test", "normal")] = n
            out[("eval", m, s, "source", "test", "anomaly")] = a
    return out


def _counts_2021() -> dict:
    out = {**_train("dev", 1000, 3), **_train("eval", 1000, 3), **_balanced("dev", "test", 100),
           **_balanced("eval", "test", 100)}
    odd = {  # (section, domain): (normal, anomaly)
        "gearbox": {(3, "source"): (130, 104), (3, "target"): (104, 182), (4, "source"): (144, 108),
                    (4, "target"): (104, 130), (5, "source"): (108, 102), (5, "target"): (110, 102)},
        "slider": {(5, "source"): (103, 101), (5, "target"): (103, 100)},
    }
    for m, cells in odd.items():
        for (s, d), (n, a) in cells.items():
            out[("eval", m, s, d, "test", "normal")] = n
            out[("eval", m, s, d, "test", "anomaly")] = a
    return out


def _counts_2223(odd_eval: dict | None = None) -> dict:
    out = {**_train("dev", 990, 10), **_train("eval", 990, 10), **_balanced("dev", "test", 50),
           **_balanced("eval", "test", 50)}
    for m, cells in (odd_eval or {}).items():
        for (d, lab), n in cells.items():
            out[("eval", m, "*", d, "test", lab)] = n
    return out


_CELLS = (("source", "normal"), ("source", "anomaly"), ("target", "normal"), ("target", "anomaly"))
_ODD_2023 = {  # eval test (domain, label) counts that are not 50 (docs/data.md, official counts)
    "bandsaw": dict(zip(_CELLS, (67, 40, 60, 33))),
    "grinder": dict(zip(_CELLS, (107, 27, 36, 30))),
    "shaker": dict(zip(_CELLS, (49, 53, 52, 46))),
}

# ---- the table -------------------------------------------------------------------------------------

_M2020 = ("fan", "pump", "slider", "ToyCar", "ToyConveyor", "valve")
_M2021 = ("fan", "gearbox", "pump", "slider", "ToyCar", "ToyTrain", "valve")
_DEV_2223 = ("bearing", "fan", "gearbox", "slider", "ToyCar", "ToyTrain", "valve")
_E2023 = ("bandsaw", "grinder", "shaker", "ToyDrone", "ToyNscale", "ToyTank", "Vacuum")
_E2024 = ("3DPrinter", "AirCompressor", "BrushlessMotor", "HairDryer", "HoveringDrone", "RoboticArm",
          "Scanner", "ToothBrush", "ToyCircuit")
_E2025 = ("AutoTrash", "BandSealer", "CoffeeGrinder", "HomeCamera", "Polisher", "ScrewFeeder", "ToyPet",
          "ToyRCCar")
_D2026 = ("ToyCarEmu", "ToyCar", "bearingEmu", "fan", "gearboxEmu", "sliderEmu", "valveEmu")
_E2026 = ("ToyDrone", "ToothBrush", "SewingMachine", "BlowerDustCollector", "Sander")

_HIDDEN_2024 = {"dev": ("gearbox", "slider", "ToyTrain"),
                "eval": ("AirCompressor", "BrushlessMotor", "HoveringDrone", "ToothBrush")}
_HIDDEN_2025 = {"dev": ("bearing", "slider", "ToyTrain"), "eval": ("AutoTrash", "Polisher", "ScrewFeeder", "ToyPet")}
_BOTH = ("train", "test")

YEARS: dict[str, Year] = {
    y.name: y
    for y in [
        Year("dcase2020", 2020, _M2020, _M2020, 11.0, "amean2020",
             section_overrides={**{m: ((0, 2, 4, 6), (1, 3, 5)) for m in ("fan", "pump", "slider", "valve")},
                                "ToyCar": ((1, 2, 3, 4), (5, 6, 7)), "ToyConveyor": ((1, 2, 3), (4, 5, 6))},
             files=_archives(_M2020, _M2020, "dev_data_{}.zip", "eval_data_train_{}.zip", "eval_data_test_{}.zip",
                             (3678171, 3727685, 3841772)) + (_gt_list(2020),),
             counts=_counts_2020(), download_gb={"dev": 10, "eval": 8},
             notes=("sections are machine IDs; one domain (source); train and dev test counts per ID are not "
                    "published in our sources, only eval test counts are checked",)),
        Year("dcase2021", 2021, _M2021, _M2021, 10.0, "hmean2021",
             dev_sections=(0, 1, 2), eval_sections=(3, 4, 5),
             files=_archives(_M2021, _M2021, "dev_data_{}.zip", "eval_data_{}_train.zip", "eval_data_{}_test.zip",
                             (4562016, 4660992, 4884786)) + (_gt_list(2021),),
             counts=_counts_2021(), download_gb={"dev": 9.5, "eval": 9.5}),
        Year("dcase2022", 2022, _DEV_2223, _DEV_2223, 10.0, "hmean2022",
             dev_sections=(0, 1, 2), eval_sections=(3, 4, 5),
             files=_archives(_DEV_2223, _DEV_2223, "dev_{}.zip", "eval_data_{}_train.zip", "eval_data_{}_test.zip",
                             (6355122, 6462969, 6586456))
             + (_gt_list(2022, TOOLKIT, "data/eval_data_list_2022.csv"),) + _gt_domain_2022(_DEV_2223),
             counts=_counts_2223(), download_gb={"dev": 8, "eval": 8},
             notes=("eval labels from ASDKit's corrected list (the baseline's list has 608 wrong ToyCar/ToyTrain "
                    "labels); eval domains from the official 2022 evaluator's ground_truth_domain files",)),
        Year("dcase2023", 2023, _DEV_2223, _E2023, 18.0, "hmean2022",
             files=_archives(_DEV_2223, _E2023, "dev_{}.zip", "eval_data_{}_train.zip", "eval_data_{}_test.zip",
                             (7882613, 7830345, 7860847)) + (_gt_list(2023),),
             counts=_counts_2223(_ODD_2023), download_gb={"dev": 3, "eval": 3.5}),
        Year("dcase2024", 2024, _DEV_2223, _E2024, 12.0, "hmean2022",
             files=_archives(_DEV_2223, _E2024, "dev_{}.zip", "eval_data_{}_train.zip", "eval_data_{}_test.zip",
                             (10902294, 11259435, 11363076), kind=("record", "records", "records"),
                             renamed={"eval_data_3DPrinter_train.zip": "eval_data_3DPrinter_train_r2.zip",
                                      "eval_data_RoboticArm_train.zip": "eval_data_RoboticArm_train_r2.zip"})
             + (_gt_list(2024),)
             + _gt_attributes("dcase2024t2", {
                 "dev": {m: _BOTH for m in _HIDDEN_2024["dev"]},
                 # no test correspondence for BrushlessMotor: the eval list names its test clips in full
                 "eval": {"AirCompressor": _BOTH, "BrushlessMotor": ("train",), "HoveringDrone": _BOTH,
                          "ToothBrush": _BOTH}}),
             hidden_attributes=_HIDDEN_2024, counts=_counts_2223(), download_gb={"dev": 3, "eval": 4},
             notes=("indices are 1-based", "the baseline's eval list names RoboticArm clips without the 'test' "
                    "token; they are parsed as test clips")),
        Year("dcase2025", 2025, _DEV_2223, _E2025, 12.0, "hmean2022",
             files=_archives(_DEV_2223, _E2025, "dev_{}.zip", "eval_data_{}_train.zip", "eval_data_{}_test.zip",
                             (15097779, 15392814, 15519362), kind="records")
             + (_gt_list(2025),)
             + _gt_attributes("dcase2025t2", {s: {m: _BOTH for m in ms} for s, ms in _HIDDEN_2025.items()}),
             hidden_attributes=_HIDDEN_2025, counts=_counts_2223(), download_gb={"dev": 3.5, "eval": 3.5},
             notes=("every machine also has a supplemental/ folder, indexed with phase 'supplemental'",)),
        Year("dcase2026", 2026, _D2026, _E2026, 12.0, "hmean2022", channels=2, channel=0,
             files=_archives(_D2026, _E2026, "dev_{}.zip", "eval_data_{}_train.zip", None,
                             (19336329, 20151556, None), kind="records",
                             renamed={"dev_ToyCar.zip": "dev_ToyCar_r2.zip"}),
             eval_test_published=False, download_gb={"dev": 6.5, "eval": 4},
             notes=("stereo WAVs; loaders use channel 0, the microphone of the former mono sets",
                    "eval test archives and ground truth are not published: --split eval fetches eval train only",
                    "official counts are not known here; --check only reports ground-truth problems")),
        # The built-in synthetic set: DCASE 2023 layout and rules (see asd.data.toy).
        Year("toy", 2023, ("fan", "gearbox", "bearing", "valve"), ("pump", "slider"), 4.0, "hmean2022",
             min_seconds=0.25, max_clip_seconds=60.0),  # any --toy seconds=...; prepare checks the exact length
    ]
}


def get_year(dataset: str) -> Year:
    try:
        return YEARS[dataset]
    except KeyError:
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of {', '.join(YEARS)}") from None


def expected_counts(year: Year, split: str, machine: str, section: int) -> dict[tuple[str, str, str], int]:
    """Official clip counts of one (split, machine, section): ``{(domain, phase, label): n}``.

    Only cells with a published number appear (2020 train, 2025 supplemental and 2026 are unknown).
    """
    out: dict[tuple[str, str, str], int] = {}
    for (sp, m, s, d, ph, lab), n in sorted(year.counts.items(), key=lambda kv: (kv[0][1] != "*", kv[0][2] != "*")):
        if sp == split and m in ("*", machine) and s in ("*", section):
            out[(d, ph, lab)] = n  # specific entries (sorted last) override the '*' defaults
    return out
