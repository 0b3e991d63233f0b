"""The autoencoder family: the official DCASE baseline, one model per machine type (docs/methods.md).

Every machine type gets its own autoencoder over log-mel frame vectors (5 stacked frames), all
trained in lockstep so that an epoch, its metrics and its checkpoint mean the same thing as for a
shared model. A random ``train.val_fraction`` of each machine's frame vectors is held out for the
validation loss, as the baseline does. The anomaly score is the mean squared reconstruction error
(backend ``recon``); the bottleneck averaged over frames is the clip's embedding.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from asd.config import Config, ConfigError
from asd.errors import CheckpointError
from asd.training import EpochCallback, TrainResult
from asd.training import runtime as rt

UNUSED = {"train.channels_last": "the autoencoder has no convolutions"}


def min_samples(cfg: Config) -> int:
    """A clip must hold one analysis window and ``features.frames`` frames (centred STFT)."""
    return max(cfg.features.n_fft, (cfg.features.frames - 1) * cfg.features.hop)


def vectors(cfg: Config, waves: np.ndarray, device: torch.device, chunk: int = 64) -> torch.Tensor:
    """Log-mel frame vectors ``(clips, frames', n_mels * frames)`` on ``device``."""
    from asd.features import frame_vectors, mel_spectrogram

    out = []
    for i in range(0, len(waves), chunk):
        w = torch.from_numpy(waves[i:i + chunk]).to(device)
        out.append(frame_vectors(mel_spectrogram(w, cfg.features, cfg.data.sample_rate), cfg.features.frames))
    return torch.cat(out)


def model_args(cfg: Config) -> dict:
    return dict(input_dim=cfg.features.n_mels * cfg.features.frames, hidden=cfg.model.hidden,
                bottleneck=cfg.model.bottleneck, layers=cfg.model.layers)


def summary(cfg: Config, checkpoint: dict) -> tuple[dict[str, float], dict[str, str]]:
    """Parameters of every machine's autoencoder together (all of them trained)."""
    from asd.models import build_model

    n = sum(p.numel() for p in build_model("ae", **checkpoint["model_args"]).parameters()) * len(checkpoint["machines"])
    return {"model/total_params": n, "model/trainable_params": n}, {}


def _split(cfg: Config, vec: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, validation) frame vectors: a seeded random ``train.val_fraction`` is held out."""
    perm = torch.randperm(len(vec), generator=torch.Generator().manual_seed(cfg.train.seed)).to(device)
    n_val = int(len(vec) * cfg.train.val_fraction)
    return vec[perm[n_val:]], vec[perm[:n_val]]


def train(cfg: Config, rows: pd.DataFrame, ckpt_dir: Path, on_epoch: EpochCallback | None,
          resume: dict | None) -> TrainResult:
    """Train one autoencoder per machine type of the training ``rows``; see :func:`asd.training.train`."""
    from tqdm import tqdm

    from asd.data.waves import load_waves
    from asd.models import build_model

    device = rt.resolve_device(cfg.train.device)
    rt.prepare_cpu(cfg.train)
    rt.seed_everything(cfg.train.seed)
    machines = sorted(rows["machine"].unique())
    args = model_args(cfg)
    data, models, forwards, steppers = {}, {}, {}, {}
    for m in machines:  # features of every machine once, on the device
        waves = load_waves(rows[rows["machine"] == m], cfg, desc=f"loading {m}")
        data[m] = _split(cfg, vectors(cfg, waves, device).reshape(-1, args["input_dim"]), device)
        models[m], forwards[m] = rt.prepare_model(build_model("ae", **args).to(device), cfg.train)
        params = list(models[m].parameters())
        steppers[m] = rt.Stepper(rt.make_optimizer(params, cfg.train), rt.grad_scaler(device, cfg.train), params,
                                 cfg.train.grad_clip, cfg.train.warmup_steps)
    start = 0
    if resume:
        for m in machines:
            models[m].load_state_dict(resume["state"][m])
            steppers[m].load_state_dict(resume["optim"][m], (resume.get("scaler") or {}).get(m))
        start = int(resume["epoch"])
    history = []
    bar = tqdm(range(start, cfg.train.epochs), desc="train ae", unit="epoch", initial=start, total=cfg.train.epochs)
    for epoch in bar:
        t0 = time.time()
        gen, _ = rt.epoch_generators(cfg.train.seed, epoch)  # same shuffles whether resumed or not
        stats: dict[str, float] = {}
        for m in machines:
            stats.update(_epoch(cfg, m, models[m], forwards[m], steppers[m], data[m], gen, device))
        stats["train/loss"] = float(np.mean([stats[f"train/{m}/loss"] for m in machines]))
        val = [v for k, v in stats.items() if k.startswith("val/")]
        if val:
            stats["val/loss"] = float(np.mean(val))
        stats["train/lr"] = steppers[machines[0]].optimizer.param_groups[0]["lr"]
        stats["train/epoch_seconds"] = time.time() - t0
        history.append(stats)
        bar.set_postfix(loss=f"{stats['train/loss']:.3f}")
        # checkpoint: everything needed to rebuild the models and resume from the next epoch
        state = {m: steppers[m].state_dict() for m in machines}
        rt.save_checkpoint(rt.checkpoint("ae", cfg, epoch + 1, model_name="ae", model_args=args, machines=machines,
                                         state={m: models[m].state_dict() for m in machines},
                                         optim={m: s["optim"] for m, s in state.items()},
                                         scaler={m: s["scaler"] for m, s in state.items()}),
                           ckpt_dir / "last.pt")
        if on_epoch:
            on_epoch(epoch + 1, stats)
    return TrainResult(ckpt_dir / "last.pt", cfg.train.epochs, history)


def _epoch(cfg: Config, machine: str, model, forward, step: rt.Stepper, data, gen: torch.Generator,
           device: torch.device) -> dict[str, float]:
    """One epoch of one machine's autoencoder: shuffled minibatches, then the validation loss."""
    tr, va = data
    model.train()
    loss_mean = rt.Mean(device)
    order = torch.randperm(len(tr), generator=gen).to(device)
    for idx in rt.batches(order, cfg.train.batch_size):
        x = tr[idx]
        with rt.autocast(device, cfg.train):  # forward
            recon, _ = forward(x)
        loss = torch.mean((recon.float() - x) ** 2)  # loss in float32
        step(loss)  # backward, clip, step
        loss_mean.add(loss, len(x))
    stats = {f"train/{machine}/loss": loss_mean.value(f"train/{machine}/loss")}
    if len(va):
        model.eval()
        with torch.no_grad(), rt.autocast(device, cfg.train):
            stats[f"val/{machine}/loss"] = float(torch.mean((forward(va)[0].float() - va) ** 2))
    return stats


class Frontend:
    """The trained autoencoders of a checkpoint: embedding, reconstruction error and residual per clip."""

    batch = 32
    per_machine = True

    def __init__(self, cfg: Config, checkpoint: dict, device: torch.device):
        from asd.models import build_model

        self.cfg, self.device, self.models = cfg, device, {}
        for m, state in checkpoint["state"].items():
            model = build_model("ae", **checkpoint["model_args"]).to(device)
            model.load_state_dict(state)
            self.models[m] = model.eval()
        self.dim = cfg.model.bottleneck

    def embed_waves(self, waves: np.ndarray, machine: str) -> dict[str, np.ndarray]:
        if machine not in self.models:
            raise CheckpointError(f"the autoencoder checkpoint has no model for machine {machine!r} "
                                  f"(trained on: {', '.join(self.models)}); train with --machines including it")
        x = vectors(self.cfg, waves, self.device)  # (b, T', D)
        b, t, d = x.shape
        with torch.no_grad(), rt.autocast(self.device, self.cfg.train):
            r, z = self.models[machine](x.reshape(b * t, d))
        err = r.float().reshape(b, t, d) - x
        # Mean residual per mel bin over frames and context positions (the Mahalanobis backend's input).
        residual = err.reshape(b, t, self.cfg.features.frames, -1).mean(dim=(1, 2))
        return {"embedding": z.float().reshape(b, t, -1).mean(1).cpu().numpy(),
                "recon": err.pow(2).mean(dim=(1, 2)).cpu().numpy(), "residual": residual.cpu().numpy()}


def frontend(cfg: Config, checkpoint: dict | None, device: torch.device) -> Frontend:
    if checkpoint is None:
        raise ConfigError("the autoencoder needs a checkpoint to embed clips")
    return Frontend(cfg, checkpoint, device)
