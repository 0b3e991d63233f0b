"""Configuration: one dataclass per component with its defaults.

A :class:`Config` is fully described by its flat dict (``loss.name=adacos``), which is what goes to
MLflow params, and by ``config.yaml`` (nested), which travels with every run's artifacts. Named
recipes are presets over these defaults (:mod:`asd.config.recipes`); ``--set key=value`` overrides
are parsed in one place (:mod:`asd.config.overrides`).

Every field carries its rule in its metadata: a range for numbers (:func:`num`), choices or a pattern
for text (:func:`one_of`, :func:`pattern`), or the registry its name is looked up in (:func:`named`).
:func:`validate` checks them whenever a config is built (``--set``, recipes, ``config.yaml`` of a run
being resumed or evaluated, search trials); the message names the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from asd.errors import AsdError


def num(default, allowed: str, why: str = ""):
    """A numeric field and its allowed values: ``"[lo, hi]"`` or with open ends ``"(lo, hi)"``, ``"[0, 1)"``."""
    return field(default=default, metadata={"range": allowed, "why": why})


def nums(default: list, allowed: str):
    """A list of numbers, each in ``allowed`` (see :func:`num`)."""
    return field(default_factory=lambda: list(default), metadata={"range": allowed})


def one_of(*choices: str):
    """A text field that takes one of ``choices``; the first is the default."""
    return field(default=choices[0], metadata={"choices": choices})


def pattern(default: str, regex: str, shown: str):
    """A text field matching ``regex`` (``shown`` is how messages spell the allowed values)."""
    return field(default=default, metadata={"pattern": regex, "choices": (shown,)})


def named(default: str, kind: str):
    """A name looked up in a registry (``dataset``, ``model``, ``loss``, ``backend``) when the recipe is loaded."""
    return field(default=default, metadata={"registry": kind})


@dataclass
class DataConfig:
    dataset: str = named("toy", "dataset")
    machines: list[str] = field(default_factory=list)  # empty = every machine; checked against the index
    clip_seconds: float = num(0.0, "[0, 600]", "0 means the year's length")  # asd.data.years
    sample_rate: int = num(16000, "[1000, 384000]")
    label: str = one_of("main", "machine_section")  # the classifier's class scheme (asd.training.targets)
    cache: bool = True  # keep decoded clips under <data-dir>/<dataset>/cache (asd.data.waves)


@dataclass
class FeatureConfig:
    """Time-frequency front end (asd.features)."""

    kind: str = one_of("logmel", "mel")
    n_fft: int = num(1024, "[16, 65536]")
    hop: int = num(512, "[1, 65536]")
    n_mels: int = num(128, "[1, 1024]")
    f_min: float = num(0.0, "[0, 192000]")
    f_max: float = num(0.0, "[0, 192000]")  # 0 = sample_rate / 2
    power: float = num(2.0, "(0, 4]")
    mel_scale: str = one_of("slaney", "htk")  # slaney (librosa default, the official baseline) | htk
    mel_norm: str = one_of("slaney", "none")
    frames: int = num(5, "[1, 64]")  # context frames stacked into one AE input vector
    center: bool = True


@dataclass
class ModelConfig:
    name: str = named("ae", "model")
    hidden: int = num(128, "[1, 65536]")
    bottleneck: int = num(8, "[1, 65536]")
    layers: int = num(4, "[1, 64]")
    embed_dim: int = num(256, "[0, 65536]", "0: no final Linear (a frozen pretrained encoder's pooled frames)")
    stft_sizes: list[int] = nums([1024], "[16, 65536]")
    use_fft: bool = True
    # multiresnet: where ASDKit differs, its behaviour is one switch away (docs/parity.md has the A/Bs)
    shortcut: str = one_of("raw", "bn")  # what residual shortcuts add: raw (the input) | bn (normalised, ASDKit)
    stft_pad: str = one_of("reflect", "constant")  # STFT end padding: reflect | constant (zeros, ASDKit)
    # pretrained encoders (model.name beats | hf; asd/models/pretrained.py)
    checkpoint: str = pattern("", r".*", "a file, a folder or a bare name in $ASD_PRETRAINED_DIR")  # the base
    lora_rank: int = num(64, "[0, 4096]")  # LoRA on attention q/v; 0 with freeze=false tunes the whole encoder
    lora_alpha: float = num(8.0, "(0, 100000]")
    lora_dropout: float = num(0.0, "[0, 1)")
    freeze: bool = False  # keep the encoder fixed (no LoRA)
    pooling: str = one_of("asp", "mean")  # asp (attentive statistics) | mean
    grad_checkpoint: bool = False  # recompute encoder layers in backward: less memory


@dataclass
class LossConfig:
    name: str = named("mse", "loss")
    margin: float = num(0.0, "[0, 3.14]")  # radians (ArcFace)
    scale: float = num(0.0, "[0, 1000]")  # 0 = the loss's adaptive default
    subclusters: int = num(1, "[1, 1024]")
    trainable: bool = True
    dynamic: bool = False
    subspace_weight: float = num(0.0, "[0, 1000]")
    featex_weight: float = num(0.0, "[0, 1000]")


@dataclass
class AugmentConfig:
    mixup_prob: float = num(0.0, "[0, 1]")
    specaug_prob: float = num(0.0, "[0, 1]")
    featex_prob: float = num(0.0, "[0, 1]")
    shift: str = one_of("none", "tile", "roll")  # training crop of clips up to the crop length: tile (ASDKit) | roll | none


@dataclass
class TrainConfig:
    epochs: int = num(100, "[0, 100000]")  # trained families need >= 1 (asd.training.check_config)
    batch_size: int = num(256, "[2, 1000000]", "BatchNorm needs two clips per batch")
    lr: float = num(1e-3, "(0, 10]")
    optimizer: str = one_of("adam", "adamw")
    weight_decay: float = num(0.0, "[0, 10]")
    val_fraction: float = num(0.1, "[0, 1)", "the fraction of frame vectors held out for validation")
    seed: int = num(0, "[0, 4294967295]", "numpy seeds are non-negative 32-bit integers")
    device: str = pattern("auto", r"auto|cpu|cuda(:\d+)?", "auto | cpu | cuda | cuda:N")
    amp: bool = True  # mixed precision on CUDA only
    amp_dtype: str = one_of("auto", "bf16", "fp16")  # auto: bf16 where the GPU has it, else fp16 (loss-scaled)
    cpu_bf16: bool = False  # bfloat16 autocast on CPU (opt-in: ~1.4x faster on AVX-512 BF16 CPUs)
    grad_clip: float = num(0.0, "[0, 1000000]")
    warmup_steps: int = num(0, "[0, 100000000]")  # linear learning-rate warm-up from 0 over this many steps
    num_threads: int = num(0, "[0, 4096]")  # 0 = torch default
    flush_denormal: bool = True  # CPU: treat subnormal floats as zero (x86 computes with them tens of times slower)
    channels_last: bool = True  # 2-D convolutions in NHWC memory layout (faster oneDNN/cuDNN kernels)
    compile: bool = False  # torch.compile the forward: ~40 s per batch shape on 2 cores; pays on DCASE-size runs
    cpu_kernels: bool = True  # CPU training: the CNN's fused BatchNorm/ReLU/pool kernels (asd.models.cpu_kernels)


@dataclass
class BackendConfig:
    name: str = named("recon", "backend")
    k: int = num(1, "[1, 100000]")
    k_ref: int = num(4, "[1, 100000]")
    clusters: int = num(16, "[1, 100000]")
    smote_ratio: float = num(0.2, "[0, 100]")
    smote_neighbors: int = num(2, "[1, 1000]")
    threshold: str = one_of("gamma", "quantile")
    threshold_quantile: float = num(0.9, "(0, 1)")
    standardize: bool = False  # z-score each input dimension on the machine's training clips first
    domain_norm: str = one_of("none", "mean", "zscore")  # knn*: scale each domain's distances by its leave-one-out ones
    members: list[str] = field(default_factory=lambda: ["knn_smote", "knn_rescale"],  # fusion: member backends
                               metadata={"registry": "backend"})
    fusion: str = one_of("mean", "min", "max")  # fusion: of the members' z-normalised scores
    floor: str = one_of("auto", "on", "off")  # fuse the raw_stats floor's scores in (asd.backends.floor)


@dataclass
class Config:
    recipe: str = "ae"
    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "") -> "Config":
        """The validated config of a nested dict (``config.yaml``); keys this version does not know are ignored.

        ``where`` (e.g. ``"config.yaml of run X: "``) prefixes error messages.
        """
        from asd.config.overrides import set_value

        cfg = cls()
        for key, value in flatten(d).items():
            set_value(cfg, key, value, strict=False)
        return validate(cfg, where)

    def flat(self) -> dict[str, str]:
        """Flattened ``section.field -> str`` for MLflow params."""
        return {k: _fmt(v) for k, v in flatten(self.to_dict()).items()}


class ConfigError(AsdError, ValueError):
    """A bad ``--set`` key or value, an unknown recipe, or a setting that does not apply."""


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"loss": {"name": "adacos"}}`` -> ``{"loss.name": "adacos"}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, list):
        return ",".join(str(x) for x in v)
    return str(v)


def to_yaml(cfg: Config) -> str:
    import yaml

    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def from_yaml(text: str, where: str = "") -> Config:
    import yaml

    return Config.from_dict(yaml.safe_load(text), where)


# ---- validation: every field's rule is its metadata above (a test checks that each field has one) ----

def rule(key: str) -> dict:
    """The metadata of the dotted field ``key`` (``range``, ``why``, ``choices``, ``pattern``, ``registry``)."""
    section, _, name = key.rpartition(".")
    obj = getattr(Config(), section) if section else Config()
    return dict(next(f.metadata for f in dataclasses.fields(obj) if f.name == name))


def _in(spec: str, x: float) -> bool:
    m = re.fullmatch(r"([\[(])\s*([^,]+),\s*([^\])]+)([\])])", spec)
    lo, hi = float(m[2]), float(m[3])
    above = x > lo or (m[1] == "[" and x == lo)
    below = x < hi or (m[4] == "]" and x == hi)
    return bool(above and below)  # NaN fails both


def check_value(key: str, value: Any, where: str = "") -> None:
    """Raise :class:`ConfigError` naming ``key``, ``value`` and what is allowed, if ``value`` breaks the rule.

    ``where`` (e.g. ``"search space s.yaml: "``) prefixes the message.
    """
    r = rule(key)
    if "range" in r:
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not _in(r["range"], v):
                why = f" ({r['why']})" if r.get("why") else ""
                raise ConfigError(f"{where}{key}={_fmt(value)} is out of range: allowed {r['range']}{why}")
    elif "pattern" in r and not re.fullmatch(r["pattern"], str(value)):
        raise ConfigError(f"{where}{key}={value!r} is not allowed; use {r['choices'][0]}")
    elif "choices" in r and "pattern" not in r and value not in r["choices"]:
        raise ConfigError(f"{where}{key}={value!r} is not allowed; choose one of {', '.join(r['choices'])}")


def validate(cfg: "Config", where: str = "") -> "Config":
    """Check every field of ``cfg`` against its rule and the fields that depend on each other; returns ``cfg``."""
    for key, value in flatten(cfg.to_dict()).items():
        check_value(key, value, where)
    f, sr = cfg.features, cfg.data.sample_rate
    top = f.f_max or sr / 2
    if f.f_max > sr / 2:
        raise ConfigError(f"{where}features.f_max={f.f_max:g} is above half the sample rate "
                          f"(data.sample_rate={sr}): at most {sr / 2:g} Hz, or 0 for that")
    if f.f_min >= top:
        raise ConfigError(f"{where}features.f_min={f.f_min:g} must lie below features.f_max ({top:g} Hz)")
    return cfg
