"""The ``beats`` frontend: what trains, what is saved, the base-hash refusal, SpecAug, the checkpoint lookup."""

from __future__ import annotations

import pytest
import torch
from beats_fixtures import BASE, FULL, TINY, random_state, waves, write_checkpoint

from asd.models import REGISTRY
from asd.models.beats import CheckpointError
from asd.models.pretrained import BaseMismatchError, BEATsEmbedder, resolve_checkpoint, spec_augment


@pytest.fixture
def ckpt(tmp_path):
    return write_checkpoint(tmp_path / "BEATs_small.pt", BASE)


def test_registered_as_beats_and_hf_in_the_pretrained_family():
    assert REGISTRY.get("beats") is BEATsEmbedder
    assert REGISTRY.get("hf").family == "pretrained" and BEATsEmbedder.family == "pretrained"


def test_forward_backward_trains_only_lora_pooling_and_head(ckpt):
    model = BEATsEmbedder(16000, checkpoint=str(ckpt), embed_dim=16, lora_rank=4).train()
    out = model(waves(2, 16000))
    assert out.shape == (2, 16) and model.dim == 16
    out.square().mean().backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert with_grad == trainable
    assert all("lora_" in n or n.startswith(("pool.", "head.")) for n in trainable)
    assert sum("lora_" in n for n in trainable) == 8  # 2 layers x (q, v) x (A, B)
    total, train = model.count_params()
    d = BASE["encoder_embed_dim"]
    lora = 2 * 2 * 4 * (d + d)  # layers x (q, v) x rank x (in + out)
    pool = (d * (d // 16) + d // 16) + (d // 16 * d + d)
    head = 2 * d * 16 + 16
    assert train == lora + pool + head
    assert total == train + sum(v.numel() for k, v in random_state(BASE).items()
                                if "relative_attention_bias" not in k or ".layers.0." in k)


def test_frozen_mean_pooling_is_the_time_mean_of_frames(ckpt):
    model = BEATsEmbedder(16000, checkpoint=str(ckpt), embed_dim=0, pooling="mean", freeze=True).train()
    wave = waves(2, 16000)
    assert model.count_params()[1] == 0 and model.dim == BASE["encoder_embed_dim"]
    assert not model.encoder.training  # a frozen encoder stays in eval mode
    out = model(wave)
    assert not out.requires_grad
    torch.testing.assert_close(out, model.encoder.frames(wave).mean(1))


def test_trainable_state_round_trip_and_base_hash_refusal(ckpt, tmp_path):
    model = BEATsEmbedder(16000, checkpoint=str(ckpt), embed_dim=8, lora_rank=2)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.normal_(std=0.1)
    sd = model.trainable_state_dict()
    saved = tmp_path / "trained.pt"
    torch.save(sd, saved)
    sd = torch.load(saved, weights_only=True)
    assert set(sd["params"]) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert sd["base"]["path"] == str(ckpt) and len(sd["base"]["sha256"]) == 64
    fresh = BEATsEmbedder(16000, checkpoint=str(ckpt), embed_dim=8, lora_rank=2).eval()
    fresh.load_trainable_state_dict(sd)
    wave = waves(1, 16000)
    with torch.no_grad():
        torch.testing.assert_close(fresh(wave), model.eval()(wave))
    # Change one byte of the base file, inside a tensor's data: the file still loads, its hash differs.
    raw = bytearray(ckpt.read_bytes())
    at = raw.find(b"data/0") + 2000
    raw[at] ^= 0x01
    ckpt.write_bytes(bytes(raw))
    changed = BEATsEmbedder(16000, checkpoint=str(ckpt), embed_dim=8, lora_rank=2)
    with pytest.raises(BaseMismatchError) as err:
        changed.load_trainable_state_dict(sd)
    msg = str(err.value)
    assert str(ckpt) in msg and sd["base"]["sha256"] in msg and changed.base_sha256 in msg
    other = BEATsEmbedder(16000, checkpoint=str(write_checkpoint(tmp_path / "b.pt", BASE)), embed_dim=4, lora_rank=2)
    other.base_sha256 = sd["base"]["sha256"]
    with pytest.raises(CheckpointError, match="do not fit this model"):
        other.load_trainable_state_dict(sd)


def test_spec_augment_masks_bands_with_the_callers_generator():
    x = torch.ones(4, 100, 128)
    assert torch.equal(spec_augment(x, 0.0), x)
    a = spec_augment(x, 1.0, generator=torch.Generator().manual_seed(0))
    b = spec_augment(x, 1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    for clip in a:  # one time band (< 80 frames) and one frequency band (< 80 bins) of zeros
        dead_t, dead_f = (clip == 0).all(1), (clip == 0).all(0)
        assert dead_t.sum() < 80 and dead_f.sum() < 80
        zeros = (clip == 0).sum()
        assert zeros == dead_t.sum() * 128 + dead_f.sum() * 100 - dead_t.sum() * dead_f.sum()
    assert (a == 0).any()


def test_spec_augment_applies_in_training_only(ckpt):
    model = BEATsEmbedder(16000, checkpoint=str(ckpt), embed_dim=8, lora_rank=2, specaug_prob=1.0)
    wave = waves(1, 16000)
    with torch.no_grad():
        model.eval()
        clean = model(wave)
        assert torch.equal(clean, model(wave))
        model.train()
        torch.manual_seed(0)  # layer drop (5 %) draws from torch's global RNG, SpecAug from the generator
        aug = model(wave, generator=torch.Generator().manual_seed(1))
        torch.manual_seed(0)
        again = model(wave, generator=torch.Generator().manual_seed(1))
    assert (aug - clean).abs().max() > 1e-4
    torch.testing.assert_close(aug, again)


def test_checkpoint_name_is_looked_up_in_asd_pretrained_dir(ckpt, tmp_path, monkeypatch):
    monkeypatch.setenv("ASD_PRETRAINED_DIR", str(ckpt.parent))
    monkeypatch.chdir(tmp_path.parent)
    assert resolve_checkpoint(ckpt.name) == str(ckpt)
    monkeypatch.setenv("ASD_PRETRAINED_DIR", str(tmp_path / "empty"))
    with pytest.raises(CheckpointError, match=r"neither a file here nor in \$ASD_PRETRAINED_DIR=.*BEATs_iter3.pt"):
        BEATsEmbedder(16000, checkpoint="BEATs_iter3.pt")


def test_bad_arguments_are_refused(ckpt):
    with pytest.raises(ValueError, match="16 kHz"):
        BEATsEmbedder(16000, 22050, checkpoint=str(ckpt))
    with pytest.raises(ValueError, match="at least 2800 samples"):
        BEATsEmbedder(1000, checkpoint=str(ckpt))
    with pytest.raises(ValueError, match="pooling must be"):
        BEATsEmbedder(16000, checkpoint=str(ckpt), pooling="max")


def test_tiny_layout_full_fine_tuning_trains_the_encoder(tmp_path):
    path = write_checkpoint(tmp_path / "t.pt", TINY)
    model = BEATsEmbedder(16000, checkpoint=str(path), lora_rank=0, embed_dim=8)
    total, train = model.count_params()
    assert train == total


@pytest.mark.slow
def test_full_size_lora_trains_under_five_percent(tmp_path):
    path = write_checkpoint(tmp_path / "full.pt", FULL)
    model = BEATsEmbedder(160000, checkpoint=str(path))  # the recipe: r = 64 on q, v; ASP; 256-d
    total, train = model.count_params()
    lora = 12 * 2 * 64 * (768 + 768)
    pool = (768 * 48 + 48) + (48 * 768 + 768)
    assert train == lora + pool + (2 * 768 * 256 + 256)
    assert total == 90_311_792 + train
    assert train / total < 0.05


def test_embedding_frontend_merges_lora_into_the_weights(ckpt):
    """The family's frontend folds each LoRA update into its projection: same embeddings, no adapters left."""
    from asd.config.recipes import load_recipe
    from asd.training import classifier, pretrained

    cfg = load_recipe("dis_beats_scac_trainable", [f"model.checkpoint={ckpt}", "data.clip_seconds=1"])
    model = classifier.build(cfg, None, torch.device("cpu"), pretrained.Hooks)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.normal_(std=0.3)  # B starts at zero: make the update count (scale alpha / r = 1/8)
    ckpt_dict = {"model_name": "beats", "model_args": pretrained.model_args(cfg),
                 "state": {"model": model.trainable_state_dict()}}
    fe = pretrained.frontend(cfg, ckpt_dict, torch.device("cpu"))
    assert not any("lora_" in n for n, _ in fe.model.named_parameters())
    wave = waves(3, 16000)
    with torch.no_grad():
        expected = model(wave).numpy()
        unadapted = classifier.build(cfg, None, torch.device("cpu"), pretrained.Hooks)
        unadapted.load_state_dict({k: v for k, v in model.state_dict().items() if "lora_" not in k}, strict=False)
        without = unadapted(wave).numpy()
    got = fe.embed_waves(wave.numpy())["embedding"]
    assert abs(got - expected).max() < 1e-4 * abs(expected).max()
    assert abs(without - expected).max() > 1e-2 * abs(expected).max()  # the update mattered
