"""CUDA: device placement, bf16 and fp16 (loss-scaled) mixed precision, resume on the GPU, and the
same embeddings on CPU and GPU. Marked ``cuda``: without a GPU they are skipped with that reason
(benchmarks/gpu_check.sh runs them on a lent GPU)."""

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_check.sh)")]
SETS = ["train.epochs=2", "data.clip_seconds=1", "train.batch_size=8", "train.device=cuda"]


def _index(toy_dir):
    from asd.data.index import read_index

    return read_index(toy_dir, "toy", ["fan", "valve"])


def _cos(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("recipe", ["ae", "dis_spec_scac_trainable"])
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_mixed_precision_trains_on_the_gpu_and_checkpoints_load_on_cpu(recipe, dtype, toy_dir, tmp_path):
    from asd.config.recipes import load_recipe
    from asd.training import embed, train
    from asd.training.runtime import load_checkpoint

    cfg = load_recipe(recipe, SETS + [f"train.amp_dtype={dtype}"])
    result = train(cfg, _index(toy_dir), tmp_path)
    assert all(np.isfinite(h["train/loss"]) for h in result.history)
    ckpt = load_checkpoint(result.checkpoint)  # map_location cpu: every tensor comes back on the CPU
    tensors = [t for t in ckpt["state"].values() for t in (t.values() if isinstance(t, dict) else [t])
               if torch.is_tensor(t)]
    assert tensors and all(t.device.type == "cpu" for t in tensors)
    scaler = ckpt["scaler"] if recipe != "ae" else next(iter(ckpt["scaler"].values()))
    assert bool(scaler) == (dtype == "fp16")  # the GradScaler runs (and is saved) for float16 only
    gpu = embed(cfg, _index(toy_dir), ckpt).embedding
    assert np.isfinite(gpu).all()


@pytest.mark.parametrize("recipe", ["ae", "dis_spec_scac_trainable"])
def test_cpu_and_gpu_embed_alike(recipe, toy_dir, tmp_path):
    from asd.config.overrides import apply_overrides
    from asd.config.recipes import load_recipe
    from asd.training import embed, train
    from asd.training.runtime import load_checkpoint

    cfg = load_recipe(recipe, SETS + ["train.amp=false"])
    ckpt = load_checkpoint(train(cfg, _index(toy_dir), tmp_path).checkpoint)
    gpu = embed(cfg, _index(toy_dir), ckpt).embedding
    cpu = embed(load_recipe(recipe, SETS[:-1] + ["train.device=cpu"]), _index(toy_dir), ckpt).embedding
    assert _cos(gpu, cpu).min() > 0.9999
    bf16 = embed(apply_overrides(cfg, {"train.amp": True}), _index(toy_dir), ckpt).embedding
    assert _cos(gpu, bf16).min() > 0.99


def test_resume_on_the_gpu(toy_dir, tmp_path):
    """A run crashed after epoch 1 and resumed ends where the uninterrupted one does (within the
    nondeterminism of GPU kernels)."""
    from asd.config.recipes import load_recipe
    from asd.training import train
    from asd.training.runtime import load_checkpoint

    cfg = load_recipe("dis_spec_scac_trainable", SETS + ["train.epochs=3", "train.amp_dtype=fp16"])
    whole = train(cfg, _index(toy_dir), tmp_path / "whole")

    def crash(epoch, _stats):
        if epoch == 1:
            raise RuntimeError("crash")

    with pytest.raises(RuntimeError, match="crash"):
        train(cfg, _index(toy_dir), tmp_path / "cut", on_epoch=crash)
    resumed = train(cfg, _index(toy_dir), tmp_path / "cut", resume=load_checkpoint(tmp_path / "cut" / "last.pt"))
    assert resumed.history[-1]["train/loss"] == pytest.approx(whole.history[-1]["train/loss"], rel=1e-3)
    a = load_checkpoint(whole.checkpoint)["state"]["model"]
    b = load_checkpoint(resumed.checkpoint)["state"]["model"]
    for k in a:
        if a[k].is_floating_point():
            assert torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-4), k
