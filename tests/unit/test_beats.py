"""Our BEATs: official checkpoint layouts load strictly, cfg switches act, errors name the file.

Numerical equality with the official code is measured by benchmarks/beats_parity.py (it needs a
checkout of microsoft/unilm); here the layouts, switches and contracts are tested on random weights.
"""

from __future__ import annotations

import math
import pickle

import pytest
import torch
from beats_fixtures import BASE, FINETUNED, FULL, TINY, random_state, waves, write_checkpoint

from asd.models.beats import BEATs, BEATsConfig, CheckpointError, load_beats


def official_keys(cfg: dict) -> set[str]:
    """State-dict keys as BEATS.md lists them for an official checkpoint written with ``cfg``."""
    keys = {"patch_embedding.weight", "encoder.pos_conv.0.bias", "encoder.pos_conv.0.weight_g",
            "encoder.pos_conv.0.weight_v", "encoder.layer_norm.weight", "encoder.layer_norm.bias",
            "layer_norm.weight", "layer_norm.bias"}
    if cfg["embed_dim"] != cfg["encoder_embed_dim"]:
        keys |= {"post_extract_proj.weight", "post_extract_proj.bias"}
    per_layer = [f"self_attn.{p}_proj.{w}" for p in "kvqo" for w in ("weight", "bias")]
    per_layer = [k.replace("o_proj", "out_proj") for k in per_layer]
    per_layer += [f"{n}.{w}" for n in ("self_attn_layer_norm", "fc1", "fc2", "final_layer_norm") for w in ("weight", "bias")]
    if cfg["gru_rel_pos"]:
        per_layer += ["self_attn.grep_a", "self_attn.grep_linear.weight", "self_attn.grep_linear.bias"]
    if cfg["relative_position_embedding"]:
        per_layer += ["self_attn.relative_attention_bias.weight"]
    return keys | {f"encoder.layers.{i}.{k}" for i in range(cfg["encoder_layers"]) for k in per_layer}


@pytest.mark.parametrize("cfg", [BASE, TINY], ids=["base", "tiny"])
def test_state_dict_keys_are_the_official_ones(cfg):
    model = BEATs(BEATsConfig.from_dict(cfg))
    assert set(model.state_dict()) == official_keys(cfg)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    d, k = cfg["encoder_embed_dim"], cfg["conv_pos"]
    assert shapes["encoder.pos_conv.0.weight_g"] == (1, 1, k)
    assert shapes["encoder.pos_conv.0.weight_v"] == (d, d // cfg["conv_pos_groups"], k)
    if cfg["gru_rel_pos"]:
        assert shapes["encoder.layers.1.self_attn.grep_a"] == (1, cfg["encoder_attention_heads"], 1, 1)
        assert shapes["encoder.layers.1.self_attn.grep_linear.weight"] == (8, d // cfg["encoder_attention_heads"])


@pytest.mark.parametrize("cfg", [BASE, FINETUNED, TINY], ids=["base", "finetuned", "tiny"])
def test_loads_strictly_in_eval_mode_with_expected_shapes(tmp_path, cfg):
    model = load_beats(write_checkpoint(tmp_path / "c.pt", cfg))
    assert not model.training and not hasattr(model, "predictor")
    with torch.no_grad():
        one_s, ten_s = model.frames(waves(2, 16000)), model.frames(waves(1, 160000))
    # 98 fbank frames -> 6 patches in time x 8 in frequency; 998 frames -> 62 x 8.
    assert one_s.shape == (2, 48, cfg["encoder_embed_dim"]) and ten_s.shape == (1, 496, cfg["encoder_embed_dim"])
    assert torch.isfinite(one_s).all()


def test_finetuned_predictor_is_dropped(tmp_path):
    state = random_state(FINETUNED)
    ours = load_beats(write_checkpoint(tmp_path / "ft.pt", FINETUNED, state=state))
    trimmed = {k: v for k, v in state.items() if not k.startswith("predictor.")}
    plain = load_beats(write_checkpoint(tmp_path / "plain.pt", BASE, state=trimmed))
    wave = waves(1, 8000)
    with torch.no_grad():
        torch.testing.assert_close(ours.frames(wave), plain.frames(wave), atol=0, rtol=0)


def test_wrong_keys_are_refused_with_their_names(tmp_path):
    state = random_state(BASE)
    state["encoder.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"unexpected keys \['encoder.extra.weight'\]"):
        load_beats(write_checkpoint(tmp_path / "extra.pt", BASE, state=state))
    state = random_state(BASE)
    del state["encoder.layers.1.fc2.bias"]
    with pytest.raises(CheckpointError, match=r"missing keys \['encoder.layers.1.fc2.bias'\]"):
        load_beats(write_checkpoint(tmp_path / "missing.pt", BASE, state=state))
    state = random_state(BASE)
    state["encoder.layers.0.fc1.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError, match="size mismatch for encoder.layers.0.fc1.weight"):
        load_beats(write_checkpoint(tmp_path / "shape.pt", BASE, state=state))
    # BASE's keys with TINY's cfg: the layout does not fit (post_extract_proj, grep_*, relative bias).
    with pytest.raises(CheckpointError, match="does not fit its own cfg"):
        load_beats(write_checkpoint(tmp_path / "mixed.pt", dict(BASE, gru_rel_pos=False), state=random_state(BASE)))


class NotTensors:  # an arbitrary pickled object, which weights_only loading must refuse
    value = 1


def _bad_files(tmp_path):
    files = {"missing": tmp_path / "nope.pt", "empty": tmp_path / "empty.pt", "text": tmp_path / "notes.pt",
             "plain state dict": tmp_path / "sd.pt", "tokenizer": tmp_path / "Tokenizer_iter3.pt",
             "other pickle": tmp_path / "obj.pkl", "torch-saved object": tmp_path / "obj.pt"}
    files["empty"].write_bytes(b"")
    files["text"].write_text("not a checkpoint\n")
    torch.save(random_state(TINY), files["plain state dict"])
    tok_state = dict(random_state(TINY), **{"quantize.embedding.weight": torch.zeros(4, 2)})
    torch.save({"cfg": dict(TINY, quant_n=1024, quant_dim=256), "model": tok_state}, files["tokenizer"])
    with open(files["other pickle"], "wb") as f:
        pickle.dump({"model": NotTensors()}, f)
    torch.save({"cfg": {}, "model": NotTensors()}, files["torch-saved object"])
    return files


@pytest.mark.parametrize("kind, words", [
    ("missing", "does not exist"), ("empty", "is empty"), ("text", "cannot be read"),
    ("plain state dict", "expected a dict with 'cfg' and 'model'"), ("tokenizer", "Tokenizer checkpoint"),
    ("other pickle", "not a torch.save file, or holds more than tensors"),
    ("torch-saved object", "pickles a Python object (test_beats.NotTensors)"),
])
def test_bad_files_name_the_file_and_the_fitting_checkpoints(tmp_path, kind, words):
    path = _bad_files(tmp_path)[kind]
    with pytest.raises(CheckpointError) as err:
        load_beats(path)
    msg = str(err.value)
    assert str(path) in msg and words in msg
    assert "BEATs_iter3.pt" in msg and "BEATs_iter3_plus_AS2M.pt" in msg and "finetuned_on_AS2M" in msg
    assert "microsoft/unilm" in msg and "'beats' folder" in msg
    assert "weights_only" not in msg and "False" not in msg
    assert isinstance(err.value, ValueError)


def test_deep_norm_scales_residuals_and_changes_the_output(tmp_path):
    state = random_state(BASE)
    deep = load_beats(write_checkpoint(tmp_path / "a.pt", BASE, state=state))
    post = load_beats(write_checkpoint(tmp_path / "b.pt", dict(BASE, deep_norm=False), state=state))
    assert deep.encoder.layers[0].alpha == pytest.approx(math.pow(2 * 2, 0.25))  # (2 N)^(1/4), N = 2 layers
    assert post.encoder.layers[0].alpha == 1.0
    wave = waves(1, 8000)
    with torch.no_grad():
        assert (deep.frames(wave) - post.frames(wave)).abs().max() > 1e-2
    with pytest.raises(CheckpointError, match="both deep_norm and layer_norm_first"):
        load_beats(write_checkpoint(tmp_path / "c.pt", dict(BASE, layer_norm_first=True), state=state))


def test_layer_norm_first_changes_the_output(tmp_path):
    state = random_state(TINY)
    pre = load_beats(write_checkpoint(tmp_path / "a.pt", TINY, state=state))
    post = load_beats(write_checkpoint(tmp_path / "b.pt", dict(TINY, layer_norm_first=False), state=state))
    with torch.no_grad():
        assert (pre.frames(waves(1, 8000)) - post.frames(waves(1, 8000))).abs().max() > 1e-2


def test_gate_with_zero_logits_doubles_the_relative_bias(tmp_path):
    """grep_linear = 0 gives sigmoid = 1/2 for both gates: gate = 1/2 (1/2 grep_a - 1) + 2 = 2 at grep_a = 2."""
    state = random_state(BASE)
    for i in range(2):
        state[f"encoder.layers.{i}.self_attn.grep_linear.weight"].zero_()
        state[f"encoder.layers.{i}.self_attn.grep_linear.bias"].zero_()
        state[f"encoder.layers.{i}.self_attn.grep_a"].fill_(2.0)
    gated = load_beats(write_checkpoint(tmp_path / "g.pt", BASE, state=state))
    plain = {k: v.clone() for k, v in state.items() if "grep" not in k}
    for i in range(2):
        plain[f"encoder.layers.{i}.self_attn.relative_attention_bias.weight"] *= 2.0
    ungated = load_beats(write_checkpoint(tmp_path / "u.pt", dict(BASE, gru_rel_pos=False), state=plain))
    zero_bias = {k: (v * 0 if "relative_attention_bias" in k else v) for k, v in plain.items()}
    no_bias = load_beats(write_checkpoint(tmp_path / "z.pt", dict(BASE, gru_rel_pos=False), state=zero_bias))
    wave = waves(1, 16000)
    with torch.no_grad():
        torch.testing.assert_close(gated.frames(wave), ungated.frames(wave), atol=1e-5, rtol=1e-5)
        assert (ungated.frames(wave) - no_bias.frames(wave)).abs().max() > 1e-2


def test_relative_position_buckets():
    """T5 buckets for 320 buckets / max distance 800: 0..79 exact, then log-spaced, keys after the query +160."""
    from asd.models.beats_layers import RelativePositionBias

    b = RelativePositionBias(320, 800, 2).buckets(1000, "cpu")
    assert b[0, 0] == 0 and b[5, 0] == 5 and b[0, 5] == 165 and b[0, 79] == 160 + 79
    # distance 80 -> 80 + floor(ln(80/80) / ln(800/80) * 80) = 80; 799 -> 80 + floor(ln(9.9875)/ln(10) * 80) = 159
    assert b[80, 0] == 80 and b[799, 0] == 80 + int(math.log(799 / 80) / math.log(10) * 80) and b[999, 0] == 159
    assert int(b.max()) == 319 and int(b.min()) == 0


def test_layer_wise_gradient_decay_scales_gradients_below_each_layer(tmp_path):
    """Ratio 0.6 on each of 2 layers' inputs: the patch embedding's gradient is 0.36 of ratio 1.0's."""
    state = random_state(BASE)
    grads = []
    for ratio in (0.6, 1.0):
        cfg = dict(BASE, layer_wise_gradient_decay_ratio=ratio, encoder_layerdrop=0.0)
        model = load_beats(write_checkpoint(tmp_path / f"{ratio}.pt", cfg, state=state))
        model.frames(waves(1, 8000)).square().sum().backward()
        grads.append(model.patch_embedding.weight.grad.clone())
    torch.testing.assert_close(grads[0], 0.36 * grads[1], rtol=1e-4, atol=1e-6)


def test_layer_drop_skips_layers_in_training_only(tmp_path):
    state = random_state(TINY)
    model = load_beats(write_checkpoint(tmp_path / "a.pt", dict(TINY, encoder_layerdrop=1.0), state=state))
    wave = waves(1, 8000)
    with torch.no_grad():
        evaluated = model.frames(wave)
        model.train()
        dropped = model.frames(wave)
        model.eval()
        model.encoder.layers = torch.nn.ModuleList()
        no_layers = model.frames(wave)
    torch.testing.assert_close(dropped, no_layers)
    assert (evaluated - dropped).abs().max() > 1e-2


def test_eval_is_deterministic_and_batching_is_exact(tmp_path):
    model = load_beats(write_checkpoint(tmp_path / "c.pt", BASE))
    wave = waves(3, 12000)
    with torch.no_grad():
        a, b = model.frames(wave), model.frames(wave)
        assert torch.equal(a, b)
        for i in range(3):
            torch.testing.assert_close(a[i:i + 1], model.frames(wave[i:i + 1]), atol=2e-5, rtol=1e-5)


def test_padding_mask_of_nothing_changes_nothing_and_masks_keys(tmp_path):
    model = load_beats(write_checkpoint(tmp_path / "c.pt", BASE))
    wave = waves(2, 16000)
    mask = torch.zeros(2, 16000, dtype=torch.bool)
    with torch.no_grad():
        torch.testing.assert_close(model.frames(wave, padding_mask=mask), model.frames(wave), atol=1e-6, rtol=0)
        mask[1, 8000:] = True
        masked = model.frames(wave, padding_mask=mask)
        # The unpadded clip is unchanged; the padded one's first tokens no longer see the padded part.
        torch.testing.assert_close(masked[0], model.frames(wave[:1])[0], atol=1e-5, rtol=0)
        assert (masked[1, :8] - model.frames(wave[1:])[0, :8]).abs().max() > 1e-3


def test_gradient_checkpointing_gives_the_same_gradients(tmp_path):
    path = write_checkpoint(tmp_path / "c.pt", dict(BASE, encoder_layerdrop=0.0))
    grads = []
    for flag in (False, True):
        model = load_beats(path, grad_checkpoint=flag).train()
        model.frames(waves(2, 8000)).square().mean().backward()
        grads.append(model.encoder.layers[0].fc1.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


def test_bf16_autocast_on_cpu_keeps_the_fbank_in_float32(tmp_path):
    """Under bf16 autocast the fbank stays float32 and the frames follow the float32 ones.

    A tiny random model loses much in bf16 (mean error ~0.2 on values ~0.8); the official code loses
    the same on the same weights (benchmarks/beats_parity.py prints both), so only a floor on the
    correlation is asserted here.
    """
    model = load_beats(write_checkpoint(tmp_path / "c.pt", BASE))
    wave = waves(2, 16000)
    with torch.no_grad():
        ref = model.frames(wave)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert model.fbank(wave).dtype == torch.float32
            low = model.frames(wave).float()
    assert torch.isfinite(low).all()
    assert torch.corrcoef(torch.stack([low.flatten(), ref.flatten()]))[0, 1] > 0.9


def test_full_size_config_has_the_released_parameter_count():
    """BEATs_iter3: 90,311,792 parameters (the relative position table is shared by the 12 layers)."""
    model = BEATs(BEATsConfig.from_dict(FULL))
    assert sum(p.numel() for p in model.parameters()) == 90_311_792
    assert len(model.state_dict()) == len(official_keys(FULL))
