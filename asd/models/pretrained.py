"""Pretrained audio encoders as ASD frontends: ``beats`` (ours, official checkpoints) and ``hf`` (transformers).

Waveform ``(B, n_samples)`` -> encoder frames -> attentive statistics pooling -> Linear -> ``(B, embed_dim)``.
The encoder is tuned with LoRA on its attention q and v projections (``lora_rank > 0``), frozen
(``freeze=True``), or fully fine-tuned (``lora_rank=0``). ``pooling="mean", embed_dim=0, freeze=True``
is the training-free ``raw_beats`` frontend (the time mean of the frames).

Only what was trained is saved (``trainable_state_dict``), with the base checkpoint's path and
SHA-256; loading refuses a base whose bytes changed. A bare checkpoint file name (``BEATs_iter3.pt``)
is looked up in ``$ASD_PRETRAINED_DIR``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from asd.config import ConfigError
from asd.models import register
from asd.models.beats import FITTING, CheckpointError
from asd.models.lora import apply_lora
from asd.models.pooling import AttentiveStatsPool, MeanPool

TRAINABLE_FORMAT = "asd-pretrained-trainable/1"


class BaseMismatchError(CheckpointError):
    """Trained parameters saved for one base checkpoint, offered to a model built on different bytes."""


def resolve_checkpoint(checkpoint: str, folders_ok: bool = False) -> str:
    """The path of ``checkpoint``: as given when it exists, else ``$ASD_PRETRAINED_DIR/<name>`` for a bare name.

    A missing file is returned unchanged (its loader names it in the error), except a bare name that
    is found nowhere, which raises CheckpointError saying where it was looked for.
    """
    path = Path(checkpoint).expanduser()
    if path.exists() and (folders_ok or path.is_file()):
        return str(path)
    root = os.environ.get("ASD_PRETRAINED_DIR")
    if root and len(path.parts) == 1 and (Path(root) / path).exists():
        return str(Path(root) / path)
    if len(path.parts) == 1 and not folders_ok:
        where = f"$ASD_PRETRAINED_DIR={root}" if root else "$ASD_PRETRAINED_DIR (unset)"
        raise CheckpointError(f"checkpoint {checkpoint!r} is neither a file here nor in {where}; download {FITTING} "
                              "and give its path or set ASD_PRETRAINED_DIR to its folder")
    return str(path)


def spec_augment(x: torch.Tensor, prob: float, time_width: int = 80, freq_width: int = 80,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """With probability ``prob`` per clip, zero one time band and one frequency band of ``x`` ``(B, T, F)``.

    Widths are uniform in ``[0, min(width, size))``, starts uniform over the positions that fit (as
    torchaudio's masking). Random numbers come from ``generator`` (a CPU generator) or torch's global RNG.
    """
    b, t, f = x.shape
    u = torch.rand(b, 5, generator=generator).to(x.device)
    keep = torch.ones_like(x, dtype=torch.bool)
    for size, width, (uw, us), dim in ((t, time_width, (u[:, 1], u[:, 2]), 1), (f, freq_width, (u[:, 3], u[:, 4]), 2)):
        w = (uw * min(width, size)).long()
        start = (us * (size - w + 1)).long().clamp(max=size - 1)
        pos = torch.arange(size, device=x.device)
        band = (pos >= start[:, None]) & (pos < (start + w)[:, None]) & (u[:, :1] < prob)  # (B, size)
        keep &= ~(band[:, :, None] if dim == 1 else band[:, None, :])
    return x * keep


class PretrainedEmbedder(nn.Module):
    """Encoder (LoRA-tuned, frozen or fully tuned) + pooling + optional Linear; subclasses build the encoder."""

    family = "pretrained"

    def _build(self, encoder: nn.Module, enc_dim: int, lora_targets, *, embed_dim: int, lora_rank: int,
               lora_alpha: float, lora_dropout: float, freeze: bool, pooling: str, specaug_prob: float):
        if pooling not in ("asp", "mean"):
            raise ConfigError(f"pooling must be 'asp' or 'mean', got {pooling!r}")
        self.encoder, self.freeze, self.specaug_prob = encoder, freeze, specaug_prob
        if freeze or lora_rank > 0:
            encoder.requires_grad_(False)
        if not freeze and lora_rank > 0:
            apply_lora(encoder, lora_targets, lora_rank, lora_alpha, lora_dropout)
        self.pool = AttentiveStatsPool(enc_dim) if pooling == "asp" else MeanPool(enc_dim)
        self.head = nn.Linear(self.pool.dim, embed_dim) if embed_dim > 0 else None
        self.dim = embed_dim if embed_dim > 0 else self.pool.dim
        self.base_path, self.base_sha256 = encoder.checkpoint_path, encoder.checkpoint_sha256

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze:
            self.encoder.eval()  # a frozen encoder never uses dropout or layer drop
        return self

    def forward(self, wave: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Waveform ``(B, n_samples)`` in [-1, 1] -> embedding ``(B, dim)``; SpecAug only in training mode."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            frames = self.encode(wave, generator)  # defined by each subclass
        x = self.pool(frames)
        return self.head(x) if self.head is not None else x

    def count_params(self) -> tuple[int, int]:
        """(all parameters, trainable parameters), each shared tensor counted once."""
        params = list(self.parameters())
        return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)

    def trainable_state_dict(self) -> dict:
        """What was trained (LoRA, pooling, head; all of the encoder when fully tuned) + the base's path and SHA-256."""
        params = {n: p.detach().cpu().clone() for n, p in self.named_parameters() if p.requires_grad}
        return {"format": TRAINABLE_FORMAT, "base": {"path": self.base_path, "sha256": self.base_sha256},
                "params": params}

    def load_trainable_state_dict(self, sd: dict) -> None:
        """Load ``trainable_state_dict()`` output; refuses it when this model's base file has another hash."""
        if not isinstance(sd, dict) or sd.get("format") != TRAINABLE_FORMAT:
            raise CheckpointError(f"not a trained pretrained-model state (expected format {TRAINABLE_FORMAT!r})")
        saved = sd["base"]
        if saved["sha256"] != self.base_sha256:
            raise BaseMismatchError(
                f"base checkpoint {self.base_path} has SHA-256 {self.base_sha256}, but these trained parameters "
                f"were made on {saved['path']} with SHA-256 {saved['sha256']}; use that exact base file")
        own = {n: p for n, p in self.named_parameters() if p.requires_grad}
        missing, extra = sorted(set(own) - set(sd["params"])), sorted(set(sd["params"]) - set(own))
        resized = [f"{n} {tuple(sd['params'][n].shape)} vs {tuple(p.shape)}" for n, p in own.items()
                   if n in sd["params"] and sd["params"][n].shape != p.shape]
        if missing or extra or resized:
            raise CheckpointError(f"trained parameters do not fit this model (built with other options?): "
                                  f"missing {missing[:4]}, unexpected {extra[:4]}, other shapes {resized[:4]}")
        with torch.no_grad():
            for n, p in own.items():
                p.copy_(sd["params"][n])


@register("beats")
class BEATsEmbedder(PretrainedEmbedder):
    """BEATs frontend (asd.models.beats) from an official checkpoint; SpecAug on its normalised fbank.

    Args:
        n_samples: clip length in samples (at least 2,800: one 16-frame patch).
        checkpoint: path of an official checkpoint, or a bare file name in ``$ASD_PRETRAINED_DIR``.
        embed_dim: output size of the final Linear; 0 = no Linear (the pooled vector itself).
        lora_rank, lora_alpha, lora_dropout: LoRA on q_proj and v_proj (peft's defaults alpha 8, dropout 0
            are ASDKit's); ``lora_rank=0`` with ``freeze=False`` fine-tunes the whole encoder.
        freeze: keep the encoder fixed (no LoRA), run it without gradients.
        pooling: ``asp`` (attentive statistics, 2 x 768) or ``mean`` (768).
        specaug_prob: per-clip probability of one time and one frequency mask (width < 80) in training.
        grad_checkpoint: recompute each transformer layer in backward (less memory, one more forward).
    """

    def __init__(self, n_samples: int, sample_rate: int = 16000, *, checkpoint: str, embed_dim: int = 256,
                 lora_rank: int = 64, lora_alpha: float = 8.0, lora_dropout: float = 0.0, freeze: bool = False,
                 pooling: str = "asp", specaug_prob: float = 0.0, grad_checkpoint: bool = False):
        super().__init__()
        from asd.models.beats import load_beats

        if sample_rate != 16000:
            raise ConfigError(f"BEATs takes 16 kHz audio; data.sample_rate is {sample_rate}")
        if n_samples < 2800:
            raise ConfigError(f"BEATs needs clips of at least 2800 samples (16 fbank frames), got {n_samples}")
        encoder = load_beats(resolve_checkpoint(checkpoint), grad_checkpoint=grad_checkpoint)
        self._build(encoder, encoder.dim, ("q_proj", "v_proj"), embed_dim=embed_dim, lora_rank=lora_rank,
                    lora_alpha=lora_alpha, lora_dropout=lora_dropout, freeze=freeze, pooling=pooling,
                    specaug_prob=specaug_prob)

    def encode(self, wave: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        fbank = self.encoder.fbank(wave)
        if self.training and self.specaug_prob > 0:
            fbank = spec_augment(fbank, self.specaug_prob, generator=generator)
        return self.encoder.encode(fbank)


@register("hf")
class HFEmbedder(PretrainedEmbedder):
    """A transformers audio encoder (AST, wav2vec 2.0, HuBERT, WavLM, Data2Vec-audio, Whisper's encoder).

    ``checkpoint`` is a local folder written by ``save_pretrained`` (a bare name is looked up in
    ``$ASD_PRETRAINED_DIR``) or a hub id where there is network. Other arguments as ``beats``; SpecAug
    works on spectrogram inputs (AST, Whisper) only.
    """

    def __init__(self, n_samples: int, sample_rate: int = 16000, *, checkpoint: str, embed_dim: int = 256,
                 lora_rank: int = 64, lora_alpha: float = 8.0, lora_dropout: float = 0.0, freeze: bool = False,
                 pooling: str = "asp", specaug_prob: float = 0.0, grad_checkpoint: bool = False):
        super().__init__()
        from asd.models.hf import load_hf

        encoder = load_hf(resolve_checkpoint(checkpoint, folders_ok=True), grad_checkpoint=grad_checkpoint)
        if sample_rate != encoder.sample_rate:
            raise ConfigError(f"{checkpoint} takes {encoder.sample_rate} Hz audio; data.sample_rate is {sample_rate}")
        if specaug_prob > 0 and not encoder.spectrogram_input:
            raise ConfigError(f"{checkpoint} ({encoder.kind}) takes raw waveforms, so SpecAug has no spectrogram to "
                             "mask; set specaug_prob=0 (its config's mask_time_prob masks features instead)")
        self._build(encoder, encoder.dim, encoder.lora_targets, embed_dim=embed_dim, lora_rank=lora_rank,
                    lora_alpha=lora_alpha, lora_dropout=lora_dropout, freeze=freeze, pooling=pooling,
                    specaug_prob=specaug_prob)

    def encode(self, wave: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        x = self.encoder.inputs(wave)
        if self.training and self.specaug_prob > 0:
            x = self.encoder.augment(x, lambda s: spec_augment(s, self.specaug_prob, generator=generator))
        return self.encoder.run(x, wave.shape[1])
