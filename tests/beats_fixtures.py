"""Random-weight BEATs checkpoints in the official ``{"cfg", "model"}`` format (layouts of BEATS.md, shrunk)."""

from __future__ import annotations

from pathlib import Path

import torch

from asd.models.beats import BEATs, BEATsConfig

# The switches of BEATs_iter3 (deep norm, gated relative positions, a 512 -> 768 projection), small sizes.
BASE = dict(input_patch_size=16, embed_dim=64, conv_bias=False, encoder_layers=2, encoder_embed_dim=48,
            encoder_ffn_embed_dim=96, encoder_attention_heads=4, activation_fn="gelu",
            layer_wise_gradient_decay_ratio=0.6, layer_norm_first=False, deep_norm=True, dropout=0.0,
            attention_dropout=0.0, activation_dropout=0.0, encoder_layerdrop=0.05, dropout_input=0.0, conv_pos=16,
            conv_pos_groups=4, relative_position_embedding=True, num_buckets=320, max_distance=800,
            gru_rel_pos=True, finetuned_model=False)
FINETUNED = dict(BASE, finetuned_model=True, predictor_class=527, predictor_dropout=0.0)
# The tiny layout: pre-LN, no relative positions, embed_dim == encoder_embed_dim (no projection).
TINY = dict(BASE, embed_dim=32, encoder_embed_dim=32, encoder_ffn_embed_dim=64, layer_norm_first=True,
            deep_norm=False, conv_pos=8, conv_pos_groups=4, relative_position_embedding=False, gru_rel_pos=False)
# The released 90M model (BEATS.md "base").
FULL = dict(BASE, embed_dim=512, encoder_layers=12, encoder_embed_dim=768, encoder_ffn_embed_dim=3072,
            encoder_attention_heads=12, conv_pos=128, conv_pos_groups=16)


def random_state(cfg: dict, seed: int = 0) -> dict:
    """A state dict for ``cfg`` with every parameter moved well away from its initial value."""
    torch.manual_seed(seed)
    model = BEATs(BEATsConfig.from_dict(cfg))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith(("weight_g", "grep_a")) or ("norm" in name and name.endswith("weight")):
                p.mul_(1.0 + 0.3 * noise)
            elif name.endswith("bias"):
                p.copy_(0.1 * noise)
            else:
                p.add_(0.3 * float(p.std()) * noise)
    state = model.state_dict()
    if cfg.get("finetuned_model"):
        state["predictor.weight"] = torch.randn(cfg["predictor_class"], cfg["encoder_embed_dim"], generator=gen)
        state["predictor.bias"] = torch.zeros(cfg["predictor_class"])
    return state


def write_checkpoint(path: Path, cfg: dict, seed: int = 0, state: dict | None = None) -> Path:
    torch.save({"cfg": dict(cfg), "model": state if state is not None else random_state(cfg, seed)}, path)
    return path


def waves(n: int, samples: int, seed: int = 0) -> torch.Tensor:
    return (0.3 * torch.randn(n, samples, generator=torch.Generator().manual_seed(seed))).clamp(-1, 1)
