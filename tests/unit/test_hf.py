"""Hugging Face encoders from local folders: our batched inputs equal each model's own feature extractor.

transformers is a test dependency (the ``dev`` extra): without it these tests fail, they do not skip.
"""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from asd.models.beats import CheckpointError
from asd.models.hf import load_hf
from asd.models.pretrained import HFEmbedder
from hf_fixtures import KINDS, build, write_folder

@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return {kind: write_folder(kind, tmp_path_factory.mktemp(kind)) for kind in KINDS}


def waves(n=2, samples=12000):
    return (0.3 * torch.randn(n, samples, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)


@pytest.mark.parametrize("kind", KINDS)
def test_inputs_equal_the_models_own_feature_extractor(folders, kind):
    enc = load_hf(folders[kind])
    wave = waves()
    extractor = tf.AutoFeatureExtractor.from_pretrained(folders[kind], local_files_only=True)
    theirs = extractor([w.numpy() for w in wave], sampling_rate=16000, return_tensors="pt")
    key = "input_features" if kind == "whisper" else "input_values"
    ours = enc.inputs(wave)
    assert ours.shape == theirs[key].shape
    torch.testing.assert_close(ours, theirs[key].float(), atol=2e-4, rtol=1e-4)


# AST: 12 x 11 patches (120 frames, 128 bins, stride 10) without its 2 summary tokens; wav2vec-style:
# (12000 - 10) // 5 + 1 = 2399, then (2399 - 8) // 4 + 1 = 598; Whisper: ceil(12000 / 320) of 50.
TOKENS = {"ast": 132, "wav2vec2": 598, "hubert": 598, "wavlm": 598, "data2vec": 598, "whisper": 38}


@pytest.mark.parametrize("kind", KINDS)
def test_frames_shapes_and_batching(folders, kind):
    enc = load_hf(folders[kind])
    assert not enc.training and len(enc.checkpoint_sha256) == 64
    wave = waves()
    with torch.no_grad():
        frames = enc.frames(wave)
        single = enc.frames(wave[1:])
    assert frames.shape == (2, TOKENS[kind], 32)
    torch.testing.assert_close(frames[1:], single, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", ["ast", "wavlm"])
def test_lora_embedder_trains_adapters_only(folders, kind):
    model = HFEmbedder(12000, checkpoint=str(folders[kind]), embed_dim=8, lora_rank=2).train()
    model(waves()).square().mean().backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in model.named_parameters() if p.grad is not None}
    assert all("lora_" in n or n.startswith(("pool.", "head.")) for n in trainable)
    assert sum("lora_" in n for n in trainable) == 2 * 2 * 2  # layers x (q, v) x (A, B)


def test_specaug_needs_a_spectrogram_input(folders):
    HFEmbedder(12000, checkpoint=str(folders["ast"]), specaug_prob=0.5, lora_rank=2)
    with pytest.raises(ValueError, match="takes raw waveforms"):
        HFEmbedder(12000, checkpoint=str(folders["wavlm"]), specaug_prob=0.5)


def test_unusable_folders_are_refused(folders, tmp_path):
    with pytest.raises(CheckpointError, match="has no config.json"):
        load_hf(tmp_path)
    bert = tmp_path / "bert"
    tf.BertModel(tf.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=37)).save_pretrained(bert)
    with pytest.raises(CheckpointError, match="is a 'bert' model; supported: audio-spectrogram-transformer"):
        load_hf(bert)
    no_extractor = tmp_path / "model_only"
    build("wavlm")[0].save_pretrained(no_extractor)
    with pytest.raises(CheckpointError, match=f"cannot load {no_extractor}"):
        load_hf(no_extractor)


def test_folder_hash_follows_its_bytes(folders, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(folders["wavlm"], copy)
    assert load_hf(copy).checkpoint_sha256 == load_hf(folders["wavlm"]).checkpoint_sha256
    (copy / ".cache" / "huggingface").mkdir(parents=True)  # what `hf download --local-dir` adds
    (copy / ".cache" / "huggingface" / "config.json.metadata").write_text("etag and time of this download")
    assert load_hf(copy).checkpoint_sha256 == load_hf(folders["wavlm"]).checkpoint_sha256
    cfg = copy / "config.json"
    cfg.write_text(cfg.read_text() + " ")
    assert load_hf(copy).checkpoint_sha256 != load_hf(folders["wavlm"]).checkpoint_sha256
