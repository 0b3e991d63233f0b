"""The built-in synthetic dataset: machine sounds in the exact DCASE 2023 layout, made with numpy.

Every machine type is a parametric sound: a harmonic series on a rotation/pass frequency set by its
attributes (speed, load, pattern, ...), a machine-specific texture (air hiss, gear mesh, bearing
resonance, valve clicks, liquid noise, slide sweeps) and background noise. The target domain uses
attribute values never seen in the source domain, a different background (colour, level and a mains
hum) and has only a handful of training clips. Anomalies are subtle, of five kinds: impulses,
sidebands (amplitude modulation at a fault rate), frequency wobble, a weakened harmonic and rubbing
noise. Each clip has its own random generator seeded from (seed, machine, split, phase, index), so
the data are deterministic whatever the order of generation.

Layout (as the DCASE 2023 archives unpack)::

    <data-dir>/toy/dev_data/raw/<machine>/{train,test}/section_00_<dom>_<phase>_<label>_NNNN_<k>_<v>.wav
    <data-dir>/toy/eval_data/raw/<machine>/train/...            (named as dev)
    <data-dir>/toy/eval_data/raw/<machine>/test/section_00_NNNN.wav   (anonymised)
    <data-dir>/toy/eval_data_list_toy.csv                        (official ground-truth list format)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asd.config import ConfigError
from asd.files import atomic, write_text

SR = 16000
ANOMALIES = ("impulses", "sidebands", "wobble", "missing_harmonic", "rubbing", "off_speed")


@dataclass
class ToySpec:
    """Size of the generated set. Defaults keep the whole default pipeline within minutes on a CPU."""

    seconds: float = 4.0
    n_source_train: int = 100
    n_target_train: int = 10
    n_test: int = 50  # per (domain x label) cell: 4 * n_test test clips per machine
    seed: int = 0
    severity: float = 1.0  # scales every anomaly
    n_dev_machines: int = 4  # more than the 4 (dev) / 2 (eval) types repeat them as variants: fan2, pump3, ...
    n_eval_machines: int = 2


def parse_spec(text: str) -> ToySpec:
    """``"seconds=1,n_test=6"`` -> ToySpec with those fields changed (the CLI's ``--toy``)."""
    import dataclasses

    spec = ToySpec()
    types = {f.name: f.type for f in dataclasses.fields(ToySpec)}
    for item in filter(None, (x.strip() for x in text.replace(";", ",").split(","))):
        key, _, value = item.partition("=")
        if key not in types or not value:
            raise ConfigError(f"--toy {item!r}: expected key=value with key in {', '.join(types)}")
        setattr(spec, key, float(value) if types[key] in ("float", float) else int(value))
    return spec


# Per machine type: attribute values per domain (key, source values, target values), the pass
# frequency each attribute value implies, and the sound's character.
MACHINES: dict[str, dict] = {
    # Attribute values sit close together (a few percent of speed, one modulation rate or harmonic
    # pattern apart), so telling operating conditions apart takes the fine spectral structure that
    # the anomalies disturb, not the coarse spectral shape that the recording conditions change.
    "fan": dict(attrs=[("spd", ["1", "2", "3"], ["4"]), ("blade", ["4", "5"], ["4", "5"])],
                f0=lambda a: 50.0 * (1 + 0.045 * int(a["spd"])), n_harm=24, emph=lambda a: int(a["blade"]),
                tilt=1.0, texture=(2200.0, 1800.0, 0.5), clicks=None, sweep=None, mod=None),
    "gearbox": dict(attrs=[("volt", ["1.0", "1.5", "2.0"], ["2.5"]), ("wt", ["100", "150"], ["200"])],
                    f0=lambda a: 20.0 * (1 + 0.09 * float(a["volt"])), n_harm=40, emph=lambda a: 21,
                    tilt=0.6, texture=(900.0, 500.0, 0.25), clicks=None, sweep=None,
                    mod=lambda a: (float(a["wt"]) / 25.0, 0.3)),
    "bearing": dict(attrs=[("vel", ["6", "10", "14"], ["18"]), ("loc", ["A", "B"], ["C"])],
                    f0=lambda a: 40.0 * (1 + 0.011 * float(a["vel"])), n_harm=12, emph=lambda a: 3,
                    tilt=1.4, texture=(4200.0, 1500.0, 0.7), clicks=None, sweep=None,
                    mod=lambda a: ({"A": 3.0, "B": 4.5, "C": 6.0}[a["loc"]], 0.3)),
    "valve": dict(attrs=[("pat", ["00", "01", "02"], ["03"])],
                  f0=lambda a: 120.0 * (1 + 0.04 * int(a["pat"])), n_harm=10, emph=lambda a: 2,
                  tilt=1.2, texture=(3000.0, 2500.0, 0.3),
                  clicks=lambda a: [0.0, 0.25, 0.5 + 0.1 * int(a["pat"])], sweep=None, mod=None),
    "pump": dict(attrs=[("flow", ["10", "20", "30"], ["45"])],
                 f0=lambda a: 30.0 * (1 + 0.0045 * float(a["flow"])), n_harm=30, emph=lambda a: 5,
                 tilt=0.9, texture=(500.0, 350.0, 0.6), clicks=None, sweep=None,
                 mod=lambda a: (float(a["flow"]) / 6.0, 0.25)),
    "slider": dict(attrs=[("vel", ["300", "500"], ["800"]), ("ac", ["0.1", "0.2"], ["0.3"])],
                   f0=lambda a: 60.0 * (1 + 0.0001 * float(a["vel"])), n_harm=16, emph=lambda a: 4,
                   tilt=1.1, texture=(1600.0, 1200.0, 0.35), clicks=None,
                   sweep=lambda a: (float(a["vel"]) / 400.0, 4.0 * float(a["ac"]) / 100.0 + 0.02), mod=None),
}
DEV_MACHINES = ("fan", "gearbox", "bearing", "valve")
EVAL_MACHINES = ("pump", "slider")


def machine_names(spec: "ToySpec") -> tuple[list[str], list[str]]:
    """Dev and eval machine names; beyond the base types, variants ``<type><n>`` (n >= 2) follow."""

    def names(types, n):
        return [t if i < len(types) else f"{t}{i // len(types) + 1}" for i, t in
                ((i, types[i % len(types)]) for i in range(n))]

    return names(DEV_MACHINES, spec.n_dev_machines), names(EVAL_MACHINES, spec.n_eval_machines)


def _template(machine: str) -> tuple[dict, float]:
    """The sound template of a machine name and its speed factor (variant n runs 7% faster per step)."""
    base = machine.rstrip("0123456789")
    if base not in MACHINES:
        raise ConfigError(f"unknown toy machine {machine!r}; types: {', '.join(MACHINES)} (variants: fan2, ...)")
    variant = int(machine[len(base):] or 1)
    return MACHINES[base], 1.07 ** (variant - 1)


def _rng(seed: int, *keys) -> np.random.Generator:
    digest = hashlib.sha256("/".join(map(str, (seed, *keys))).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _colored_noise(rng: np.random.Generator, n: int, alpha: float) -> np.ndarray:
    """Noise with power spectrum ~ 1/f^alpha, unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.maximum(np.fft.rfftfreq(n, 1 / SR), 20.0)
    x = np.fft.irfft(spec * f ** (-alpha / 2), n)
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def _band_noise(rng: np.random.Generator, n: int, center: float, width: float) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SR)
    x = np.fft.irfft(spec * np.exp(-0.5 * ((f - center) / (width / 2)) ** 2), n)
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def _clicks(rng, n: int, times: np.ndarray, center: float, decay_ms: float = 3.0) -> np.ndarray:
    """Decaying resonant clicks at ``times`` (seconds), unit peak."""
    out = np.zeros(n)
    length = int(SR * decay_ms * 6 / 1000)
    tt = np.arange(length) / SR
    pulse = np.exp(-tt / (decay_ms / 1000)) * np.sin(2 * np.pi * center * tt)
    for t0 in times:
        i = int(t0 * SR)
        if 0 <= i < n:
            seg = pulse[: n - i] * rng.uniform(0.7, 1.0)
            out[i : i + len(seg)] += seg
    return out


def _tilt(x: np.ndarray, beta: float) -> np.ndarray:
    """Colour a signal by ``(f / 1 kHz) ** (beta / 2)`` in amplitude: a microphone's placement and response."""
    spec = np.fft.rfft(x)
    f = np.maximum(np.fft.rfftfreq(len(x), 1 / SR), 50.0)
    return np.fft.irfft(spec * (f / 1000.0) ** (beta / 2), len(x))


def synthesize(machine: str, attrs: dict[str, str], domain: str, anomaly: str | None, rng: np.random.Generator,
               seconds: float, severity: float = 1.0) -> np.ndarray:
    """One clip of ``machine`` as float32 in [-1, 1]; ``anomaly`` is None or one of :data:`ANOMALIES`."""
    m, speed = _template(machine)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    f0 = m["f0"](attrs) * speed * rng.uniform(0.994, 1.006)  # speed jitter: normal variation between clips
    sev = severity * rng.uniform(0.6, 1.4)
    if anomaly == "off_speed":  # running 1.5-3% off its set speed: between two operating points
        f0 *= 1.0 + rng.choice([-1.0, 1.0]) * 0.022 * sev
    k = np.arange(1, m["n_harm"] + 1)
    amps = k ** (-m["tilt"]) * rng.lognormal(0.0, 0.12, len(k))
    emph = m["emph"](attrs)
    amps[(k % emph) == 0] *= 3.0  # e.g. blade-pass or gear-mesh orders dominate
    amps[k * f0 > 7000] = 0.0
    # Instantaneous frequency: slow natural drift, a slider's sweep, or an anomalous wobble.
    inst = 1.0 + 0.002 * np.sin(2 * np.pi * rng.uniform(0.1, 0.3) * t + rng.uniform(0, 6.3))
    if m["sweep"] is not None:
        rate, depth = m["sweep"](attrs)
        inst += depth * np.sin(2 * np.pi * rate * t)
    am = np.ones(n)
    if m["mod"] is not None:  # a load- or position-dependent pulsation is part of the normal sound
        rate, depth = m["mod"](attrs)
        am += depth * np.sin(2 * np.pi * rate * t + rng.uniform(0, 6.3))
    if anomaly == "wobble":
        inst += 0.012 * sev * np.sin(2 * np.pi * rng.uniform(1.0, 4.0) * t)
    elif anomaly == "sidebands":
        am += 0.35 * sev * np.sin(2 * np.pi * rng.uniform(6.0, 18.0) * t)
    elif anomaly == "missing_harmonic":
        top = np.argsort(amps)[::-1][:3]
        amps[rng.choice(top)] *= max(0.0, 1.0 - 0.5 * sev)
    phase = 2 * np.pi * f0 * np.cumsum(inst) / SR
    harm = (amps[:, None] * np.sin(k[:, None] * phase[None, :] + rng.uniform(0, 6.3, (len(k), 1)))).sum(0)
    harm = harm / (np.sqrt(np.mean(harm**2)) + 1e-12) * am
    center, width, level = m["texture"]
    texture = _band_noise(rng, n, center * rng.uniform(0.97, 1.03), width)
    texture *= 1.0 + 0.5 * np.sin(2 * np.pi * f0 * t)  # texture breathes with the rotation
    x = harm + level * texture
    if m["clicks"] is not None:
        pattern = np.array(m["clicks"](attrs))
        times = (np.arange(int(seconds) + 1)[:, None] + pattern[None, :]).ravel() + rng.uniform(0, 0.05)
        x += 2.0 * _clicks(rng, n, times, center=2500.0)
    if anomaly == "impulses":
        rate = rng.uniform(3.0, 12.0)
        times = np.arange(rng.uniform(0, 1 / rate), seconds, 1 / rate)
        x += 1.3 * sev * _clicks(rng, n, times, center=rng.uniform(1500, 5000), decay_ms=2.0)
    elif anomaly == "rubbing":
        rub = _band_noise(rng, n, rng.uniform(1200, 4000), 600.0)
        x += 0.25 * sev * rub * np.clip(np.sin(2 * np.pi * f0 * t), 0, None) ** 2 * 2
    return _record(x, domain, rng, t, seconds)


def _record(x: np.ndarray, domain: str, rng: np.random.Generator, t: np.ndarray, seconds: float) -> np.ndarray:
    """The machine's sound ``x`` as a microphone records it, as float32 in [-1, 1].

    Recording conditions vary from clip to clip in ways that say nothing about the machine's health:
    the microphone's colouring, the background's colour and level, now and then another machine.
    """
    n = len(x)
    x = _tilt(x, rng.uniform(-0.5, 0.5))
    x = x / (np.sqrt(np.mean(x**2)) + 1e-12)
    bg = _colored_noise(rng, n, rng.uniform(0.0, 2.0))
    if domain == "source":
        snr_db = rng.uniform(6, 18)
    else:  # the target domain is recorded elsewhere: louder, with mains hum
        snr_db = rng.uniform(3, 12)
        bg = bg + 0.6 * np.sin(2 * np.pi * 50.0 * t * rng.uniform(0.99, 1.01))
        bg /= np.sqrt(np.mean(bg**2))
    if rng.random() < 0.2:  # a neighbouring machine's tone for a while
        on = (t > rng.uniform(0, seconds * 0.7)) & (t < rng.uniform(seconds * 0.3, seconds) + seconds * 0.3)
        bg = bg + rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * rng.uniform(150, 3000) * t) * on
    x = x + 10 ** (-snr_db / 20) * bg
    gain = 0.1 * 10 ** (rng.uniform(-6, 3) / 20)
    return np.clip(x * gain, -1.0, 1.0).astype(np.float32)


def _attr_values(machine: str, domain: str, rng: np.random.Generator) -> list[tuple[str, str]]:
    return [(key, str(rng.choice(src if domain == "source" else tgt))) for key, src, tgt in _template(machine)[0]["attrs"]]


def clip_plan(spec: ToySpec, machine: str, split: str) -> list[dict]:
    """Every clip of one machine: name, anonymised name, domain, phase, label, attributes, anomaly kind."""
    plan = []
    cells = [("source", "train", "normal", spec.n_source_train), ("target", "train", "normal", spec.n_target_train)]
    cells += [(d, "test", lab, spec.n_test) for d in ("source", "target") for lab in ("normal", "anomaly")]
    for domain, phase, label, count in cells:
        for i in range(count):
            rng = _rng(spec.seed, machine, split, domain, phase, label, i)
            attrs = _attr_values(machine, domain, rng)
            kind = ANOMALIES[int(rng.integers(len(ANOMALIES)))] if label == "anomaly" else None
            suffix = "_".join(f"{k}_{v}" for k, v in attrs)
            plan.append(dict(name=f"section_00_{domain}_{phase}_{label}_{i:04d}_{suffix}.wav", domain=domain,
                             phase=phase, label=label, attrs=attrs, anomaly=kind, key=(domain, phase, label, i)))
    if split == "eval":  # anonymise eval test clips in a seeded random order, as DCASE does
        test = [c for c in plan if c["phase"] == "test"]
        order = _rng(spec.seed, machine, "anon").permutation(len(test))
        for new_idx, j in enumerate(order):
            test[j]["anon"] = f"section_00_{new_idx:04d}.wav"
    return plan


def generate(out_dir: str | Path, spec: ToySpec | None = None, machines: list[str] | None = None,
             progress: bool = True) -> list[dict]:
    """Write the toy dataset under ``out_dir`` (``<data-dir>/toy``); returns one record per clip.

    Records carry ``path`` (relative to ``out_dir``), ``file`` (as distributed), ``split``, ``machine``,
    ``domain``, ``phase``, ``label``, ``attributes`` (list of pairs) and ``anomaly`` (kind or None).
    Existing files of the same name are kept (generation is deterministic), so a re-run is cheap.
    """
    import soundfile as sf
    from tqdm import tqdm

    spec = spec or ToySpec()
    out_dir = Path(out_dir)
    dev, evl = machine_names(spec)
    todo = [(mt, "dev") for mt in dev] + [(mt, "eval") for mt in evl]
    if machines:
        unknown = sorted(set(machines) - set(dev) - set(evl))
        if unknown:
            raise ConfigError(f"unknown toy machine(s) {unknown}; this toy set has: {', '.join(dev + evl)}")
        todo = [(mt, s) for mt, s in todo if mt in machines]
    plans = [(mt, split, c) for mt, split in todo for c in clip_plan(spec, mt, split)]
    records = []
    gt_lines: dict[str, list[str]] = {}
    for mt, split, c in tqdm(plans, desc="toy: generating clips", unit="clip", disable=not progress):
        file = c.get("anon", c["name"])
        rel = Path(f"{split}_data/raw/{mt}/{c['phase']}/{file}")
        dest = out_dir / rel
        if not dest.exists():
            rng = _rng(spec.seed, mt, split, *c["key"], "audio")
            wave = synthesize(mt, dict(c["attrs"]), c["domain"], c["anomaly"], rng, spec.seconds, spec.severity)
            with atomic(dest) as tmp:  # a hidden name of this process: never taken for a clip, never shared
                sf.write(str(tmp), wave, SR, subtype="PCM_16", format="WAV")
        records.append(dict(path=str(rel), file=file, split=split, machine=mt, domain=c["domain"], phase=c["phase"],
                            label=c["label"], attributes=c["attrs"], anomaly=c["anomaly"], true_name=c["name"]))
    # The ground-truth list always covers every eval machine, whichever were generated this time.
    for mt in evl:
        gt_lines[mt] = [f"{c['anon']},{c['name']}" for c in clip_plan(spec, mt, "eval") if "anon" in c]
    if gt_lines:  # the official list format: a machine line, then "anonymised,true name" rows
        lines = [ln for mt, rows in gt_lines.items() for ln in [mt, *sorted(rows)]]
        write_text(out_dir / "eval_data_list_toy.csv", "\n".join(lines) + "\n")
    return records
