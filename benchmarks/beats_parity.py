"""Numerical parity of asd.models.beats with the official BEATs code (microsoft/unilm, ``beats/``).

Builds the official model for several cfg layouts, gives every parameter random values, saves them
as an official ``{"cfg", "model"}`` checkpoint, loads that file with our ``load_beats`` and with the
official class, and prints the max abs difference of the official ``extract_features(wave)[0]``
and our ``frames(wave)`` on random waves of several lengths, plus one padding-mask case and one
where both run under CPU bf16 autocast (with, for scale, how far bf16 moves the official output).
torchaudio is not installable here, so ``torchaudio.compliance.kaldi`` is replaced in
``sys.modules`` by a stand-in whose ``fbank`` calls our ``kaldi_fbank`` per clip; the fbank
itself is checked against Kaldi's recipe in tests/unit/test_kaldi_fbank.py.

Usage::

    git clone <mirror of microsoft/unilm> /tmp/unilm
    python benchmarks/beats_parity.py --unilm /tmp/unilm
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import types
import warnings
from pathlib import Path

import torch

SMALL = dict(input_patch_size=16, embed_dim=512, conv_bias=False, encoder_layers=2, encoder_embed_dim=768,
             encoder_ffn_embed_dim=3072, encoder_attention_heads=12, activation_fn="gelu",
             layer_wise_gradient_decay_ratio=0.6, layer_norm_first=False, deep_norm=True, dropout=0.0,
             attention_dropout=0.0, activation_dropout=0.0, encoder_layerdrop=0.05, dropout_input=0.0,
             conv_pos=128, conv_pos_groups=16, relative_position_embedding=True, num_buckets=320,
             max_distance=800, gru_rel_pos=True, finetuned_model=False)
TINY = dict(SMALL, embed_dim=96, encoder_embed_dim=96, encoder_ffn_embed_dim=192, encoder_attention_heads=4,
            layer_norm_first=True, deep_norm=False, conv_pos=16, conv_pos_groups=4,
            relative_position_embedding=False, gru_rel_pos=False)
LAYOUTS = {
    "base (12 x 768, BEATs_iter3)": dict(SMALL, encoder_layers=12),
    "finetuned (2 x 768, predictor)": dict(SMALL, finetuned_model=True, predictor_class=527, predictor_dropout=0.0),
    "tiny (layer_norm_first, no rel pos)": TINY,
    "variant: rel pos without gate, post-LN": dict(TINY, layer_norm_first=False, relative_position_embedding=True,
                                                  num_buckets=64, max_distance=100),
    "variant: glu, odd conv_pos, conv_bias, proj": dict(TINY, activation_fn="glu", conv_pos=15, conv_pos_groups=3,
                                                        conv_bias=True, embed_dim=48, input_patch_size=8),
}


def install_kaldi_standin() -> None:
    """Put a ``torchaudio.compliance.kaldi`` module in sys.modules whose fbank is our kaldi_fbank."""
    from asd.features import kaldi_fbank

    def fbank(waveform, num_mel_bins=23, sample_frequency=16000.0, frame_length=25.0, frame_shift=10.0, **kw):
        if kw:
            raise NotImplementedError(f"stand-in fbank got options it does not implement: {sorted(kw)}")
        # The official code has already multiplied by 2**15, so no scaling here.
        return kaldi_fbank(waveform, int(sample_frequency), num_mel_bins, frame_length, frame_shift, scale=1.0)[0]

    names = ("torchaudio", "torchaudio.compliance", "torchaudio.compliance.kaldi")
    mods = [types.ModuleType(n) for n in names]
    mods[2].fbank = fbank
    mods[0].compliance, mods[1].kaldi = mods[1], mods[2]
    sys.modules.update(dict(zip(names, mods)))


def randomise(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Move every parameter away from its initial value so that no term of the computation is trivial."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith(("weight_g", "grep_a")) or (p.dim() == 1 and "norm" in name and name.endswith("weight")):
                p.copy_(p * (1.0 + 0.3 * noise))
            elif name.endswith("bias"):
                p.copy_(0.1 * noise)
            else:
                p.add_(noise * 0.3 * float(p.std()) if p.numel() > 1 else 0.1 * noise)


def compare(official_cls, cfg_cls, cfg: dict, seconds: list[float], folder: Path, gen: torch.Generator):
    from asd.models.beats import load_beats

    official = official_cls(cfg_cls(cfg))
    randomise(official, gen)
    path = folder / "ckpt.pt"
    torch.save({"cfg": cfg, "model": official.state_dict()}, path)
    ours = load_beats(path)
    official.load_state_dict(torch.load(path, weights_only=True)["model"])
    official.predictor = None  # a fine-tuned model's extract_features returns class scores; compare frames
    official.eval()
    rows = []
    with torch.no_grad():
        for sec in seconds:
            wave = (0.3 * torch.randn(2, int(sec * 16000), generator=gen)).clamp(-1, 1)
            ref = official.extract_features(wave)[0]
            got = ours.frames(wave)
            rows.append((f"{sec:g} s", tuple(got.shape), (got - ref).abs().max().item(), ref.abs().max().item(), None))
        wave = (0.3 * torch.randn(2, 16000, generator=gen)).clamp(-1, 1)
        ref = official.extract_features(wave)[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):  # both in bf16: same rounding, same result?
            ref16, got16 = official.extract_features(wave)[0].float(), ours.frames(wave).float()
        rows.append(("1 s, bf16", tuple(got16.shape), (got16 - ref16).abs().max().item(), ref.abs().max().item(),
                     (ref16 - ref).abs().max().item()))
        if cfg["input_patch_size"] < 16:  # more tokens than frames: the reference's mask reduction masks all
            return rows
        wave = (0.3 * torch.randn(2, 32000, generator=gen)).clamp(-1, 1)
        mask = torch.zeros(2, 32000, dtype=torch.bool)
        mask[1, 20000:] = True
        ref = official.extract_features(wave.clone(), padding_mask=mask.clone())[0]
        got = ours.frames(wave, padding_mask=mask)
        rows.append(("2 s, padded", tuple(got.shape), (got - ref).abs().max().item(), ref.abs().max().item(), None))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--unilm", required=True, type=Path, help="a checkout of microsoft/unilm")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    install_kaldi_standin()
    sys.path.insert(0, str(args.unilm / "beats"))
    warnings.filterwarnings("ignore", category=FutureWarning)  # the official code's nn.utils.weight_norm
    from BEATs import BEATs, BEATsConfig  # noqa: E402  (the official module)

    torch.manual_seed(args.seed)  # the official modules' initialisation
    gen = torch.Generator().manual_seed(args.seed)
    print(f"{'layout':46s} {'input':12s} {'frames':16s} {'max |ours - official|':>22s} {'max |official|':>15s}"
          f" {'official bf16 vs fp32':>22s}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, cfg in LAYOUTS.items():
            seconds = [1.0, 10.0] if name.startswith("base") else [0.5, 1.37, 4.0, 10.0]
            for inp, shape, diff, scale, bf16 in compare(BEATs, BEATsConfig, cfg, seconds, Path(tmp), gen):
                extra = f"{bf16:22.3e}" if bf16 is not None else ""
                print(f"{name:46s} {inp:12s} {str(shape):16s} {diff:22.3e} {scale:15.3f} {extra}")


if __name__ == "__main__":
    main()
