"""LoRA: an untrained adapter changes nothing, the update is B·A·alpha/r, merging keeps the outputs."""

from __future__ import annotations

import pytest
import torch
from beats_fixtures import BASE, waves, write_checkpoint
from torch import nn

from asd.models.beats import load_beats
from asd.models.lora import LoRALinear, apply_lora, merge_lora


def test_lora_linear_starts_as_its_base_and_adds_the_scaled_product():
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    lora = LoRALinear(base, rank=2, alpha=8.0)
    x = torch.randn(3, 6)
    torch.testing.assert_close(lora(x), base(x))  # B = 0 at the start
    assert not base.weight.requires_grad and lora.lora_A.requires_grad and lora.lora_B.requires_grad
    with torch.no_grad():
        lora.lora_B.normal_()
    expected = base(x) + x @ lora.lora_A.t() @ lora.lora_B.t() * 4.0  # alpha / r = 8 / 2
    torch.testing.assert_close(lora(x), expected)
    torch.testing.assert_close(lora.merged()(x), expected, atol=1e-5, rtol=1e-5)


def test_dropout_acts_on_the_adapter_input_only():
    base = nn.Linear(4, 4)
    lora = LoRALinear(base, rank=2, alpha=2.0, dropout=1.0).train()  # every adapter input dropped
    with torch.no_grad():
        lora.lora_B.normal_()
    x = torch.randn(2, 4)
    torch.testing.assert_close(lora(x), base(x))


def test_rank_and_target_errors():
    with pytest.raises(ValueError, match="rank must be positive"):
        LoRALinear(nn.Linear(2, 2), rank=0, alpha=1.0)
    with pytest.raises(ValueError, match=r"no nn.Linear named \['qkv'\]"):
        apply_lora(nn.Sequential(nn.Linear(2, 2)), targets=("qkv",))


def test_beats_q_v_adapters_merge_back_to_the_official_layout(tmp_path):
    model = load_beats(write_checkpoint(tmp_path / "c.pt", BASE))
    keys = set(model.state_dict())
    model.requires_grad_(False)  # apply_lora freezes only the layers it wraps
    assert apply_lora(model, ("q_proj", "v_proj"), rank=4, alpha=8.0) == 4  # 2 layers x (q, v)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(names) == sorted(f"encoder.layers.{i}.self_attn.{p}_proj.lora_{m}"
                                   for i in range(2) for p in "qv" for m in "AB")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.5)
    wave = waves(2, 8000)
    with torch.no_grad():
        unmerged = model.frames(wave)
        assert merge_lora(model) == 4
        merged = model.frames(wave)
    assert set(model.state_dict()) == keys
    torch.testing.assert_close(merged, unmerged, atol=1e-4, rtol=1e-4)
    assert (unmerged - load_beats(tmp_path / "c.pt").frames(wave)).abs().max() > 1e-2  # the adapters did act
