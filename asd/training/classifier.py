"""The classifier family: one shared embedding model for every machine type, trained to classify
meta-information (:mod:`asd.training.targets`) with an angular-margin loss (:mod:`asd.losses`).

Clips are tiled or cropped to ``data.clip_seconds`` (random crop start in training, 0 when
embedding); the model computes its own spectra, so on a GPU features are made on the GPU and the
host only moves int16-decoded waveforms (:mod:`asd.data.waves`), one batch ahead.

Auxiliary objectives (the extra heads are trainable sub-cluster AdaCos, K = ``loss.subclusters``):
- ``loss.subspace_weight`` > 0: one head per branch sub-embedding predicting the same classes;
- ``loss.featex_weight`` > 0: a 3C-way head on feature-exchanged embeddings (:func:`asd.training.augment.featex`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from asd.config import Config, ConfigError
from asd.data.waves import WaveStore, clip_samples, wave_store
from asd.errors import CheckpointError
from asd.training import EpochCallback, TrainResult
from asd.training import runtime as rt

UNUSED = {"train.val_fraction": "the classifier trains on every training clip (no validation split)"}
# multiresnet arguments added after checkpoints were first written, with the behaviour those checkpoints had.
LEGACY_ARGS = {"shortcut": "raw", "stft_pad": "reflect"}


def checkpoint_args(ckpt: dict) -> dict:
    """The model arguments of a checkpoint; a multiresnet checkpoint from before an argument existed gets
    the value that reproduces it (:data:`LEGACY_ARGS`)."""
    return {**LEGACY_ARGS, **ckpt["model_args"]} if ckpt["model_name"] == "multiresnet" else dict(ckpt["model_args"])


def min_samples(cfg: Config) -> int:
    """A clip must hold the largest STFT window (and the model's 1024-sample minimum)."""
    return max([1024, *[int(n) for n in cfg.model.stft_sizes]])


def model_args(cfg: Config) -> dict:
    """The model's constructor arguments (the model takes the ones its signature names)."""
    return dict(n_samples=clip_samples(cfg), sample_rate=cfg.data.sample_rate,
                stft_sizes=[int(n) for n in cfg.model.stft_sizes], use_fft=bool(cfg.model.use_fft),
                embed_dim=int(cfg.model.embed_dim), shortcut=cfg.model.shortcut, stft_pad=cfg.model.stft_pad)


class Hooks:
    """How the shared-model loop builds, runs, augments and saves its model.

    The pretrained family trains the same way with other hooks (asd.training.pretrained).
    """

    family = "classifier"
    wave_specaug = True  # SpecAug on the waveform (STFT round trip); pretrained models mask their own fbank

    @staticmethod
    def model_args(cfg: Config) -> dict:
        return model_args(cfg)

    @staticmethod
    def forward(model, wave: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return model(wave)

    @staticmethod
    def state(model) -> dict:
        return model.state_dict()

    @staticmethod
    def load_state(model, state: dict) -> None:
        model.load_state_dict(state)


def build_heads(cfg: Config, dim: int, branch_dim: int, n_branches: int, n_classes: int) -> nn.ModuleDict:
    """The main loss head plus the auxiliary heads the config asks for."""
    from asd.losses import build_loss

    lc = cfg.loss
    heads = {"main": build_loss(lc.name, dim, n_classes, **vars(lc))}
    if lc.subspace_weight > 0:
        for b in range(n_branches):
            heads[f"sub{b}"] = build_loss("scadacos", branch_dim, n_classes, subclusters=lc.subclusters, trainable=True)
    if lc.featex_weight > 0:
        heads["featex"] = build_loss("scadacos", dim, 3 * n_classes, subclusters=lc.subclusters, trainable=True)
    return nn.ModuleDict(heads)


def _branch_dim(model) -> int:
    """The size of one branch's sub-embedding (a model without branches is one branch)."""
    return getattr(model, "branch_dim", model.dim)


def objective(heads: nn.ModuleDict, emb: torch.Tensor, target: torch.Tensor, cfg: Config, branch_dim: int,
              gen: torch.Generator) -> torch.Tensor:
    """Total loss = main + subspace_weight·Σ branch heads + featex_weight·FeatEx head."""
    from asd.training.augment import featex

    loss = heads["main"](emb, target)
    if cfg.loss.subspace_weight > 0:
        subs = [heads[f"sub{b}"](emb[:, b * branch_dim:(b + 1) * branch_dim], target)
                for b in range(emb.shape[1] // branch_dim)]
        loss = loss + cfg.loss.subspace_weight * torch.stack(subs).sum()
    if cfg.loss.featex_weight > 0:
        ex, ex_t = featex(emb, target, cfg.augment.featex_prob, gen, split=branch_dim)
        loss = loss + cfg.loss.featex_weight * heads["featex"](ex, ex_t)
    return loss


@dataclass
class _Run:
    """What one training run's epochs share."""

    hooks: type[Hooks]
    model: nn.Module
    forward: Callable  # the model, or its torch.compile'd forward
    heads: nn.ModuleDict
    step: rt.Stepper
    store: WaveStore
    y: torch.Tensor  # class index per training clip
    n_classes: int
    n_samples: int
    device: torch.device


def train(cfg: Config, rows: pd.DataFrame, ckpt_dir: Path, on_epoch: EpochCallback | None,
          resume: dict | None, hooks: type[Hooks] = Hooks) -> TrainResult:
    """Train the shared classifier on the training ``rows`` of every machine; see :func:`asd.training.train`."""
    from asd.models import build_model
    from asd.training.targets import encode, fit_classes

    device = rt.resolve_device(cfg.train.device)
    rt.prepare_cpu(cfg.train)
    rt.seed_everything(cfg.train.seed)
    classes = resume["classes"] if resume else fit_classes(rows, cfg.data.label)
    y = torch.from_numpy(encode(rows, classes, cfg.data.label))
    if (y < 0).any():
        raise CheckpointError("training clips with a class missing from the checkpoint's label map; "
                              "resume with the same index and machines as the interrupted run")
    # a resumed multiresnet keeps the architecture it was started with, whatever the defaults are now
    args = checkpoint_args(resume) if resume and resume["model_name"] == "multiresnet" else hooks.model_args(cfg)
    model, forward = rt.prepare_model(build_model(cfg.model.name, **args).to(device), cfg.train)
    heads = build_heads(cfg, model.dim, _branch_dim(model), model.dim // _branch_dim(model), len(classes)).to(device)
    params = [p for p in list(model.parameters()) + list(heads.parameters()) if p.requires_grad]
    step = rt.Stepper(rt.make_optimizer(params, cfg.train), rt.grad_scaler(device, cfg.train), params,
                      cfg.train.grad_clip, cfg.train.warmup_steps)
    start = 0
    if resume:
        hooks.load_state(model, resume["state"]["model"])
        heads.load_state_dict(resume["state"]["heads"])
        step.load_state_dict(resume["optim"], resume.get("scaler"))
        start = int(resume["epoch"])
    run = _Run(hooks, model, forward, heads, step, wave_store(rows, cfg, "decoding"), y, len(classes),
               args["n_samples"], device)
    history = []
    for epoch in range(start, cfg.train.epochs):
        stats = _epoch(cfg, epoch, run)
        history.append(stats)
        # checkpoint: model, heads, optimiser and label map, so resume and evaluation need nothing else
        rt.save_checkpoint(rt.checkpoint(hooks.family, cfg, epoch + 1, model_name=cfg.model.name, model_args=args,
                                         classes=list(classes), label=cfg.data.label,
                                         state={"model": hooks.state(model), "heads": heads.state_dict()},
                                         **step.state_dict()),
                           ckpt_dir / "last.pt")
        if on_epoch:
            on_epoch(epoch + 1, stats)
    return TrainResult(ckpt_dir / "last.pt", cfg.train.epochs, history)


def _epoch(cfg: Config, epoch: int, run: _Run) -> dict[str, float]:
    """One epoch over every training clip; returns its metrics."""
    from asd.training.augment import mixup, specaug

    # Everything random in an epoch derives from (seed, epoch): a resumed run repeats it exactly.
    gen, rng = rt.epoch_generators(cfg.train.seed, epoch)
    torch.manual_seed(cfg.train.seed * 100003 + epoch)  # for ops that draw from torch's global RNG (layer drop)
    order = torch.randperm(len(run.y), generator=gen).numpy()
    run.model.train()
    run.heads.train()
    t0, loss_mean, acc_mean = time.time(), rt.Mean(run.device), rt.Mean(run.device)
    batches = rt.batches(order, cfg.train.batch_size)
    waves = rt.prefetch(lambda idx: run.store.batch(idx, run.n_samples, rng, cfg.augment.shift), batches)
    for idx, wave_np in zip(batches, waves):
        wave = rt.to_device(wave_np, run.device)
        target = nn.functional.one_hot(run.y[idx], run.n_classes).float().to(run.device)
        wave, target = mixup(wave, target, cfg.augment.mixup_prob, gen)  # augment
        if run.hooks.wave_specaug:
            wave = specaug(wave, cfg.augment.specaug_prob, gen)
        with rt.autocast(run.device, cfg.train):  # forward (spectra stay float32 inside the model)
            emb = run.hooks.forward(run.forward, wave, gen)
        emb = emb.float()
        loss = objective(run.heads, emb, target, cfg, _branch_dim(run.model), gen)  # loss in float32
        run.step(loss)  # backward, clip, step
        with torch.no_grad():
            acc = (run.heads["main"].logits(emb).argmax(1) == target.argmax(1)).float().mean()
        loss_mean.add(loss, len(idx))
        acc_mean.add(acc, len(idx))
    seconds = time.time() - t0
    stats = {"train/loss": loss_mean.value("train/loss"), "train/accuracy": acc_mean.value(),
             "train/lr": run.step.optimizer.param_groups[0]["lr"],
             "train/clips_per_second": loss_mean.count / max(seconds, 1e-9), "train/epoch_seconds": seconds}
    if torch.is_tensor(getattr(run.heads["main"], "s", None)):
        stats["train/scale"] = float(run.heads["main"].s)
    return stats


class Frontend:
    """The trained shared model of a checkpoint: one embedding per clip, whatever its machine type.

    Machines the model was not trained on are embedded as well; the label map is not needed here,
    since backends work on embeddings.
    """

    batch = 64
    per_machine = False

    def __init__(self, cfg: Config, checkpoint: dict | None, device: torch.device, hooks: type[Hooks] = Hooks):
        self.cfg, self.device = cfg, device
        self.model, self.forward = rt.prepare_model(build(cfg, checkpoint, device, hooks), cfg.train)
        self.dim = self.model.dim

    def embed_waves(self, waves: np.ndarray, machine: str | None = None) -> dict[str, np.ndarray]:
        with torch.inference_mode(), rt.autocast(self.device, self.cfg.train):
            return {"embedding": self.forward(rt.to_device(waves, self.device)).float().cpu().numpy()}


def build(cfg: Config, checkpoint: dict | None, device: torch.device, hooks: type[Hooks] = Hooks) -> nn.Module:
    """The embedding model of ``checkpoint`` in eval mode (``None``: ``cfg``'s untrained model, which
    only a frozen pretrained encoder embeds with)."""
    from asd.models import build_model

    if checkpoint is None:
        return build_model(cfg.model.name, **hooks.model_args(cfg)).to(device).eval()
    model = build_model(checkpoint["model_name"], **checkpoint_args(checkpoint)).to(device)
    hooks.load_state(model, checkpoint["state"]["model"])
    return model.eval()


def param_counts(cfg: Config, model: nn.Module, checkpoint: dict | None) -> dict[str, float]:
    """``model/total_params``, ``model/trainable_params`` of the embedding model and, when trained,
    ``model/head_params``: the trained parameters of its loss heads (see asd.training.model_summary)."""
    params = list(model.parameters())  # shared tensors once
    counts = {"model/total_params": sum(p.numel() for p in params),
              "model/trainable_params": sum(p.numel() for p in params if p.requires_grad)}
    if checkpoint is not None:
        branch = _branch_dim(model)
        heads = build_heads(cfg, model.dim, branch, model.dim // branch, len(checkpoint["classes"]))
        counts["model/head_params"] = sum(p.numel() for p in heads.parameters() if p.requires_grad)
    return counts


def summary(cfg: Config, checkpoint: dict | None) -> tuple[dict[str, float], dict[str, str]]:
    return param_counts(cfg, build(cfg, checkpoint, torch.device("cpu")), checkpoint), {}


def frontend(cfg: Config, checkpoint: dict | None, device: torch.device) -> Frontend:
    if checkpoint is None:
        raise ConfigError(f"model {cfg.model.name!r} needs a checkpoint to embed clips")
    return Frontend(cfg, checkpoint, device)
