"""Per-year facts in one table: machine types, clip length and the official metric rule.

The metric rule names are keys of :data:`asd.metrics.RULES`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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


_DEV_2223 = ("bearing", "fan", "gearbox", "slider", "ToyCar", "ToyTrain", "valve")

YEARS: dict[str, Year] = {
    y.name: y
    for y in [
        Year("dcase2020", 2020, ("fan", "pump", "slider", "ToyCar", "ToyConveyor", "valve"),
             ("fan", "pump", "slider", "ToyCar", "ToyConveyor", "valve"), 11.0, "amean2020"),
        Year("dcase2021", 2021, ("fan", "gearbox", "pump", "slider", "ToyCar", "ToyTrain", "valve"),
             ("fan", "gearbox", "pump", "slider", "ToyCar", "ToyTrain", "valve"), 10.0, "hmean2021"),
        Year("dcase2022", 2022, _DEV_2223, _DEV_2223, 10.0, "hmean2022"),
        Year("dcase2023", 2023, _DEV_2223,
             ("bandsaw", "grinder", "shaker", "ToyDrone", "ToyNscale", "ToyTank", "Vacuum"), 18.0, "hmean2022"),
        Year("dcase2024", 2024, _DEV_2223,
             ("3DPrinter", "AirCompressor", "BrushlessMotor", "HairDryer", "HoveringDrone", "RoboticArm",
              "Scanner", "ToothBrush", "ToyCircuit"), 12.0, "hmean2022"),
        Year("dcase2025", 2025, _DEV_2223,
             ("AutoTrash", "BandSealer", "CoffeeGrinder", "HomeCamera", "Polisher", "ScrewFeeder", "ToyPet",
              "ToyRCCar"), 12.0, "hmean2022"),
        Year("dcase2026", 2026, ("ToyCarEmu", "ToyCar", "bearingEmu", "fan", "gearboxEmu", "sliderEmu", "valveEmu"),
             ("ToyDrone", "ToothBrush", "SewingMachine", "BlowerDustCollector", "Sander"), 12.0, "hmean2022"),
        # The built-in synthetic set: DCASE 2023 layout and rules (see asd.data.toy).
        Year("toy", 2023, ("fan", "gearbox", "bearing", "valve"), ("pump", "slider"), 4.0, "hmean2022"),
    ]
}


def get_year(dataset: str) -> Year:
    try:
        return YEARS[dataset]
    except KeyError:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(YEARS)}") from None
