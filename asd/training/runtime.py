"""What every training family shares: device, mixed precision, seeding, the optimiser step,
checkpoints and batch prefetch.

Checkpoints are dicts holding everything needed to rebuild and resume: ``family``, ``model_name``,
``model_args``, ``state`` (state dicts), ``optim``, ``scaler``, ``config``, ``epoch`` and what the
family adds (the AE's ``machines``, the classifier's ``classes``). They are written atomically and
read back with ``weights_only=True``.
"""

from __future__ import annotations

import contextlib
import os
import random
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from asd.config import Config, TrainConfig
from asd.errors import AsdError, CheckpointError, TrainingError
from asd.models import cpu_kernels


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is an error that says so."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AsdError("--device cuda requested but no CUDA device is visible; use --device cpu or auto")
    return torch.device(name)


def prepare_cpu(train: TrainConfig) -> None:
    """Thread count, whether subnormal floats are flushed to zero (``train.flush_denormal``), and
    whether the CNN's fused CPU kernels are used (``train.cpu_kernels``; not under ``train.compile``,
    whose compiler fuses the same layers itself).

    x86 cores compute with subnormal floats tens of times slower; weights or optimiser state that
    drift below 1.2e-38 would slow every later step. Flushing them to zero changes results only in
    that range. The flag is per thread and new threads inherit it, so it is set before training
    starts its threads.
    """
    if train.num_threads:
        torch.set_num_threads(train.num_threads)
    torch.set_flush_denormal(train.flush_denormal)
    keep_freed_memory()
    cpu_kernels.use(train.cpu_kernels and not train.compile)


_TRIM_THRESHOLD, _MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Let glibc keep freed tensor memory for reuse instead of unmapping it (Linux; a no-op elsewhere).

    A training step allocates and frees the same large activations every step. glibc serves blocks
    above its mmap threshold (at most 32 MiB, smaller than the CNN's largest activations) with fresh
    ``mmap`` pages, so every step pays the kernel for page faults and zeroing (measured: 5-10 % of a
    CNN step on one core). With mmap off for ordinary allocations (glibc still maps memory when the
    heap cannot grow) and a 1 GiB trim threshold the blocks stay in the heap and are reused; the
    process keeps its peak heap instead of returning it between steps. Returns whether both
    settings were taken.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_MMAP_MAX, 0)) and bool(libc.mallopt(_TRIM_THRESHOLD, 2**30))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False


def amp_dtype(device: torch.device, train: TrainConfig) -> torch.dtype | None:
    """The autocast dtype of ``train`` on ``device``, or None for float32.

    CUDA: ``train.amp`` with ``train.amp_dtype`` (``auto`` = bfloat16 where the GPU has it, else
    float16); CPU: bfloat16 when ``train.cpu_bf16``.
    """
    if device.type == "cuda" and train.amp:
        choices = {"bf16": torch.bfloat16, "fp16": torch.float16}
        if train.amp_dtype == "auto":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if train.amp_dtype not in choices:
            raise AsdError(f"train.amp_dtype={train.amp_dtype!r}: choose auto, bf16 or fp16")
        return choices[train.amp_dtype]
    if device.type == "cpu" and train.cpu_bf16:
        return torch.bfloat16
    return None


def autocast(device: torch.device, train: TrainConfig):
    """Mixed precision as :func:`amp_dtype` says; a no-op context for float32."""
    dtype = amp_dtype(device, train)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def grad_scaler(device: torch.device, train: TrainConfig) -> torch.amp.GradScaler:
    # float16 needs loss scaling; bfloat16 and float32 do not.
    return torch.amp.GradScaler("cuda", enabled=amp_dtype(device, train) == torch.float16)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_generators(seed: int, epoch: int) -> tuple[torch.Generator, np.random.Generator]:
    """The random sources of one epoch, derived from ``(seed, epoch)`` only: a resumed run repeats it."""
    return torch.Generator().manual_seed(seed * 100003 + epoch), np.random.default_rng([seed, epoch])


def batches(order, batch_size: int) -> list:
    """Consecutive chunks of ``order`` of ``batch_size``, dropping a last chunk of one (BatchNorm needs two)."""
    out = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    out = [b for b in out if len(b) > 1]
    if len(order) and not out:
        raise TrainingError(f"no training batch of at least 2 clips (train.batch_size={batch_size}, "
                            f"{len(order)} training items); BatchNorm needs two: set train.batch_size >= 2")
    return out


def make_optimizer(params, train: TrainConfig) -> torch.optim.Optimizer:
    """Adam or AdamW, with the fused kernel (one pass over every parameter, on CPU and CUDA)."""
    params = list(params)
    fused = bool(params) and all(p.dtype == torch.float32 for p in params)
    if train.optimizer == "adam":
        return torch.optim.Adam(params, lr=train.lr, weight_decay=train.weight_decay, fused=fused)
    if train.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay or 0.01, fused=fused)
    raise AsdError(f"unknown train.optimizer {train.optimizer!r} (adam | adamw)")


def prepare_model(model: nn.Module, train: TrainConfig) -> tuple[nn.Module, Callable]:
    """``(model, forward)``: the model in the memory layout ``train`` asks for, and the callable to run it.

    ``train.channels_last`` stores 4-D weights (the 2-D convolutions) as NHWC, whose kernels are
    faster on CPUs (oneDNN) and GPUs (cuDNN); ``train.compile`` wraps the forward in ``torch.compile``.
    The model's parameters and state dict are unchanged either way.
    """
    if train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, (torch.compile(model) if train.compile else model)


class Stepper:
    """One optimiser step: zero the gradients, backward (loss-scaled for float16), clip, step.

    With ``warmup_steps`` > 0 the learning rate of step ``t`` (0-based, counted over the whole run) is
    ``lr * min(1, t / warmup_steps)``: a linear warm-up from 0, then constant (timm's CosineLRScheduler
    as the BEATs recipe configures it, warmup_lr_init 0 and lr_min = lr). The count and the target
    ``lr`` live in the optimiser's param groups, so they travel with its state dict and a resumed run
    continues the ramp where it stopped.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, params: list,
                 grad_clip: float = 0.0, warmup_steps: int = 0):
        self.optimizer, self.scaler, self.params, self.grad_clip = optimizer, scaler, params, grad_clip
        self.warmup_steps = int(warmup_steps)
        for group in optimizer.param_groups:
            group.setdefault("target_lr", group["lr"])
            group.setdefault("steps_done", 0)

    def __call__(self, loss: torch.Tensor) -> None:
        for group in self.optimizer.param_groups:
            if self.warmup_steps > 0:
                group["lr"] = group["target_lr"] * min(1.0, group["steps_done"] / self.warmup_steps)
            group["steps_done"] += 1
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
            nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def state_dict(self) -> dict:
        return {"optim": self.optimizer.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state_dict(self, optim: dict, scaler: dict | None) -> None:
        self.optimizer.load_state_dict(optim)
        for group in self.optimizer.param_groups:  # checkpoints from before the warm-up have no count
            group.setdefault("target_lr", group["lr"])
            group.setdefault("steps_done", 0)
        if scaler:  # checkpoints before the AE had a scaler carry none
            self.scaler.load_state_dict(scaler)


class Mean:
    """A running mean of per-batch tensors kept on the device: no host sync until :meth:`value`."""

    def __init__(self, device: torch.device):
        self.total = torch.zeros((), dtype=torch.float64, device=device)
        self.count = 0

    def add(self, value: torch.Tensor, n: int) -> None:
        self.total += value.detach().double() * n
        self.count += n

    def value(self, name: str = "value") -> float:
        v = float(self.total) / max(self.count, 1)
        if not np.isfinite(v):
            raise TrainingError(f"{name} is {v} after this epoch; training diverged (try a lower train.lr, "
                                "train.grad_clip=1, or float32 instead of bf16/amp)")
        return v


def checkpoint(family: str, cfg: Config, epoch: int, **fields) -> dict:
    """The checkpoint dict of one epoch: ``family``, ``config``, ``epoch`` plus the family's fields."""
    return dict(family=family, config=cfg.to_dict(), epoch=epoch, **fields)


def save_checkpoint(obj: dict, path: Path) -> None:
    """Write atomically: a killed process never leaves a half-written checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


KINDS = ("asd reads only the checkpoints it writes: checkpoints/last.pt of a train run of a trained recipe "
         "(ae or classifier family), or frontend.pt of a saved detector")


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint written by ``asd`` (``torch.load`` with ``weights_only=True``).

    Raises:
        CheckpointError: the file is missing, empty, not a torch file, holds Python objects (which are
            never loaded: a file made elsewhere cannot run code here), or is not an ``asd`` checkpoint.
    """
    import pickle
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; {KINDS}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a checkpoint; train again or use another run")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if zipfile.is_zipfile(path):
            raise CheckpointError(f"{path}: a torch file holding Python objects asd does not load (only tensors and "
                                  f"plain containers are read, so no file can run code here); {KINDS}") from None
        raise CheckpointError(f"{path}: not a torch checkpoint; {KINDS}") from None
    except Exception as e:  # noqa: BLE001 - zip, EOF and runtime errors of a damaged file alike
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: it is damaged or "
                              f"truncated); {KINDS}") from None
    if not isinstance(ckpt, dict) or not {"family", "config", "state"} <= set(ckpt):
        raise CheckpointError(f"{path}: a torch file but not an asd checkpoint (no family/config/state); {KINDS}")
    return ckpt


def to_device(x: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array as a tensor on ``device`` (pinned and non-blocking on CUDA)."""
    t = torch.from_numpy(x)
    return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t


def prefetch(fn: Callable, items: Iterable) -> Iterator:
    """``fn(item)`` for each item, the next one computed in a background thread while the caller works."""
    items = list(items)
    with ThreadPoolExecutor(1) as pool:
        nxt = pool.submit(fn, items[0]) if items else None
        for i in range(len(items)):
            cur = nxt.result()
            if i + 1 < len(items):
                nxt = pool.submit(fn, items[i + 1])
            yield cur
