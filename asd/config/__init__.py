"""Configuration: one dataclass per component with its defaults.

A :class:`Config` is fully described by its flat dict (``loss.name=adacos``), which is what goes to
MLflow params, and by ``config.yaml`` (nested), which travels with every run's artifacts. Named
recipes are presets over these defaults (:mod:`asd.config.recipes`); ``--set key=value`` overrides
are parsed in one place (:mod:`asd.config.overrides`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from asd.errors import AsdError


@dataclass
class DataConfig:
    dataset: str = "toy"
    machines: list[str] = field(default_factory=list)  # empty = every machine of the dataset
    clip_seconds: float = 0.0  # 0 = the year's value (asd.data.years)
    sample_rate: int = 16000
    label: str = "main"  # classification target: main (machine x section x attrs x domain) | machine_section
    cache: bool = True  # keep decoded clips under <data-dir>/<dataset>/cache (asd.data.waves)


@dataclass
class FeatureConfig:
    """Time-frequency front end (asd.features)."""

    kind: str = "logmel"  # logmel | mel | spec | fft
    n_fft: int = 1024
    hop: int = 512
    n_mels: int = 128
    f_min: float = 0.0
    f_max: float = 0.0  # 0 = sample_rate / 2
    power: float = 2.0
    mel_scale: str = "slaney"  # slaney (librosa default, the official baseline) | htk (torchaudio default)
    mel_norm: str = "slaney"  # slaney | none
    frames: int = 5  # context frames stacked into one AE input vector
    center: bool = True


@dataclass
class ModelConfig:
    name: str = "ae"
    hidden: int = 128
    bottleneck: int = 8
    layers: int = 4
    embed_dim: int = 256
    stft_sizes: list[int] = field(default_factory=lambda: [1024])
    use_fft: bool = True
    shortcut: str = "raw"  # multiresnet: what residual shortcuts add: bn (the normalised input, ASDKit) | raw
    stft_pad: str = "reflect"  # multiresnet: STFT end padding: constant (zeros, ASDKit) | reflect
    # pretrained encoders (model.name beats | hf; asd/models/pretrained.py)
    checkpoint: str = ""  # the base checkpoint: a file or folder, or a bare name in $ASD_PRETRAINED_DIR
    lora_rank: int = 64  # LoRA on the attention q/v projections; 0 with freeze=false tunes the whole encoder
    lora_alpha: float = 8.0
    lora_dropout: float = 0.0
    freeze: bool = False  # keep the encoder fixed (no LoRA)
    pooling: str = "asp"  # asp (attentive statistics) | mean
    grad_checkpoint: bool = False  # recompute encoder layers in backward: less memory


@dataclass
class LossConfig:
    name: str = "mse"
    margin: float = 0.0
    scale: float = 0.0  # 0 = the loss's adaptive default
    subclusters: int = 1
    trainable: bool = True
    dynamic: bool = False
    subspace_weight: float = 0.0
    featex_weight: float = 0.0


@dataclass
class AugmentConfig:
    mixup_prob: float = 0.0
    specaug_prob: float = 0.0
    featex_prob: float = 0.0
    shift: str = "none"  # training crop of clips up to the crop length: tile (ASDKit) | roll | none (asd.data.waves)


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-3
    optimizer: str = "adam"  # adam | adamw
    weight_decay: float = 0.0
    val_fraction: float = 0.1
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # mixed precision on CUDA only
    amp_dtype: str = "auto"  # auto (bf16 where the GPU has it, else fp16) | bf16 | fp16 (with loss scaling)
    cpu_bf16: bool = False  # bfloat16 autocast on CPU (opt-in: ~1.4x faster on AVX-512 BF16 CPUs)
    grad_clip: float = 0.0
    num_threads: int = 0  # 0 = torch default
    flush_denormal: bool = True  # CPU: treat subnormal floats as zero (x86 computes with them tens of times slower)


@dataclass
class BackendConfig:
    name: str = "recon"
    k: int = 1
    k_ref: int = 4
    clusters: int = 16
    smote_ratio: float = 0.2
    smote_neighbors: int = 2
    threshold: str = "gamma"  # gamma | quantile
    threshold_quantile: float = 0.9
    standardize: bool = False  # z-score each input dimension on the machine's training clips first
    domain_norm: str = "none"  # knn*: scale each domain's distances by its leave-one-out ones: none | mean | zscore
    members: list[str] = field(default_factory=lambda: ["knn_smote", "knn_rescale"])  # fusion: member backends
    fusion: str = "mean"  # fusion: mean | min | max of the members' z-normalised scores


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
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        """The config of a nested dict (``config.yaml``); keys this version does not know are ignored."""
        from asd.config.overrides import set_value

        cfg = cls()
        for key, value in flatten(d).items():
            set_value(cfg, key, value, strict=False)
        return cfg

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


def from_yaml(text: str) -> Config:
    import yaml

    return Config.from_dict(yaml.safe_load(text))
