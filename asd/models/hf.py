"""Hugging Face audio encoders as frame extractors: ``load_hf(folder_or_hub_id).frames(wave) -> (B, tokens, dim)``.

Supported: AST, wav2vec 2.0, HuBERT, WavLM, Data2Vec-audio and Whisper's encoder. Each model's own
feature extractor is re-done batched with torch ops on the waveform's device (tests check that the
inputs equal the extractor's): AST: Kaldi fbank (Hann window, no int16 scaling) padded or cut to
``max_length`` frames, then ``(x - mean) / (2 std)``; wav2vec-style: the raw waveform, standardised
per clip when ``do_normalize``; Whisper: log-mel of the clip zero-padded to ``chunk_length`` seconds.
``transformers`` is imported here only, inside functions (pip extra ``pretrained``).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch
from torch import nn

from asd.models.beats import CheckpointError

KINDS = {"audio-spectrogram-transformer": "ast", "wav2vec2": "wave", "hubert": "wave", "wavlm": "wave",
         "data2vec-audio": "wave", "whisper": "whisper"}


def folder_sha256(folder: Path) -> str:
    """SHA-256 over every file of a model folder (relative names and contents, in sorted order).

    Hidden files and folders are left out: ``hf download --local-dir`` keeps its download metadata
    under ``.cache/``, which changes with every download of the same weights.
    """
    h = hashlib.sha256()
    files = (p for p in folder.rglob("*") if p.is_file())
    for f in sorted(p for p in files if not any(part.startswith(".") for part in p.relative_to(folder).parts)):
        h.update(str(f.relative_to(folder)).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


class HFEncoder(nn.Module):
    """A transformers encoder with its input pipeline; ``frames(wave)`` ``(B, samples)`` -> ``(B, tokens, dim)``."""

    def __init__(self, model: nn.Module, extractor, kind: str):
        super().__init__()
        self.model, self.kind = model, kind
        self.sample_rate = int(extractor.sampling_rate)
        self.dim = int(getattr(model.config, "hidden_size", None) or model.config.d_model)
        self.spectrogram_input = kind != "wave"
        names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
        # transformers 5 names every supported model's projections q_proj/v_proj; older ASTs say query/value.
        self.lora_targets = ("q_proj", "v_proj") if "q_proj" in names else ("query", "value")
        if kind == "ast":
            self.n_mels, self.max_frames = int(extractor.num_mel_bins), int(extractor.max_length)
            self.normalize = bool(extractor.do_normalize)
            self.mean, self.std = float(extractor.mean), float(extractor.std)
        elif kind == "wave":
            self.normalize = bool(extractor.do_normalize)
        else:
            self.n_fft, self.hop, self.n_pad = int(extractor.n_fft), int(extractor.hop_length), int(extractor.n_samples)
            self.register_buffer("mel", torch.as_tensor(extractor.mel_filters, dtype=torch.float32), persistent=False)
            self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)

    def inputs(self, wave: torch.Tensor) -> torch.Tensor:
        """The model's input tensor for waveforms ``(B, samples)``, as its feature extractor makes it (float32)."""
        with torch.autocast(wave.device.type, enabled=False):
            wave = wave.float()
            if self.kind == "ast":
                from asd.features import kaldi_fbank

                x = kaldi_fbank(wave, self.sample_rate, self.n_mels, window="hanning", scale=1.0)
                x = torch.nn.functional.pad(x[:, :self.max_frames], (0, 0, 0, max(0, self.max_frames - x.shape[1])))
                return (x - self.mean) / (2 * self.std) if self.normalize else x
            if self.kind == "wave":
                if not self.normalize:
                    return wave
                mean, var = wave.mean(1, keepdim=True), wave.var(1, unbiased=False, keepdim=True)
                return (wave - mean) / torch.sqrt(var + 1e-7)
            wave = torch.nn.functional.pad(wave[:, :self.n_pad], (0, max(0, self.n_pad - wave.shape[1])))
            spec = torch.stft(wave, self.n_fft, self.hop, window=self.window, return_complex=True)
            power = spec[..., :-1].abs() ** 2  # the extractor drops the last STFT frame
            logmel = torch.clamp(self.mel.t() @ power, min=1e-10).log10()  # (B, mels, frames)
            logmel = torch.maximum(logmel, logmel.amax(dim=(1, 2), keepdim=True) - 8.0)
            return (logmel + 4.0) / 4.0

    def augment(self, x: torch.Tensor, fn) -> torch.Tensor:
        """Apply ``fn`` (on ``(B, time, freq)``) to a spectrogram input."""
        return fn(x) if self.kind == "ast" else fn(x.transpose(1, 2)).transpose(1, 2)

    def run(self, x: torch.Tensor, n_samples: int) -> torch.Tensor:
        """Model inputs -> frames. AST: patch tokens (its 2 summary tokens dropped); Whisper: the tokens
        that cover the clip itself (2 mel frames each), not the zero padding up to ``chunk_length``."""
        if self.kind == "whisper":
            out = self.model(input_features=x).last_hidden_state
            return out[:, :min(out.shape[1], math.ceil(n_samples / (2 * self.hop)))]
        out = self.model(input_values=x).last_hidden_state
        return out[:, 2:] if self.kind == "ast" else out

    def frames(self, wave: torch.Tensor) -> torch.Tensor:
        return self.run(self.inputs(wave), wave.shape[1])

    forward = frames


def load_hf(source: str | Path, grad_checkpoint: bool = False) -> HFEncoder:
    """Load a transformers audio encoder and its feature extractor, in eval mode.

    ``source``: a folder written by ``save_pretrained`` (read with ``local_files_only=True``) or a hub
    id (needs network or the local hub cache). The result has ``checkpoint_path`` and
    ``checkpoint_sha256`` (over the folder's files). Raises CheckpointError naming the source.
    """
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel
    from transformers.utils import logging as hf_logging

    folder = Path(source).expanduser()
    local = folder.is_dir()
    if local and not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder} has no config.json: give a folder written by transformers' save_pretrained "
                              "(model and feature extractor) or a hub id")
    kw = {"local_files_only": True} if local else {}
    # A local folder loads in a second: its "Loading weights" bar on every build (train, evaluate, each
    # search trial) is noise, and under click's test runner it lands on the `run_id:` line. Hub
    # downloads keep their bars.
    quiet = local and hf_logging.is_progress_bar_enabled()
    if quiet:
        hf_logging.disable_progress_bar()
    try:
        config = AutoConfig.from_pretrained(str(source), **kw)
        kind = KINDS.get(config.model_type)
        if kind is None:
            raise CheckpointError(f"{source} is a {config.model_type!r} model; supported: {', '.join(sorted(KINDS))}")
        extractor = AutoFeatureExtractor.from_pretrained(str(source), **kw)
        model = AutoModel.from_pretrained(str(source), **kw)
    except OSError as e:  # transformers' way of saying a file is missing or the hub is unreachable
        raise CheckpointError(f"cannot load {source}: {str(e).splitlines()[0]}") from None
    finally:
        if quiet:
            hf_logging.enable_progress_bar()
    if kind == "whisper":
        model = model.get_encoder()
    if grad_checkpoint and getattr(model, "supports_gradient_checkpointing", False):
        model.gradient_checkpointing_enable()
    enc = HFEncoder(model, extractor, kind)
    if not local:  # a hub id: hash the cached snapshot transformers just used
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(str(source), local_files_only=True))
    enc.checkpoint_path, enc.checkpoint_sha256 = str(source), folder_sha256(folder)
    return enc.eval()
