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

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
CONV = dict(conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=2, do_stable_layer_norm=False)


def _wave_model(config_cls, model_cls, normalize):
    return model_cls(config_cls(**SMALL, **CONV)), tf.Wav2Vec2FeatureExtractor(do_normalize=normalize)


def build(kind: str):
    torch.manual_seed(0)
    if kind == "ast":
        cfg = tf.ASTConfig(**SMALL, max_length=120, num_mel_bins=128, patch_size=16, frequency_stride=10,
                           time_stride=10)
        return tf.ASTModel(cfg), tf.ASTFeatureExtractor(max_length=120)
    if kind == "whisper":  # a 1-s window instead of 30 s keeps the test small; the code reads it from the extractor
        cfg = tf.WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=2, decoder_layers=1,
                               decoder_attention_heads=2, encoder_ffn_dim=37, decoder_ffn_dim=37, num_mel_bins=80,
                               max_source_positions=50, vocab_size=100, max_target_positions=16,
                               pad_token_id=1, bos_token_id=2, eos_token_id=2, decoder_start_token_id=3)
        return tf.WhisperModel(cfg), tf.WhisperFeatureExtractor(feature_size=80, chunk_length=1)
    classes = {"wav2vec2": (tf.Wav2Vec2Config, tf.Wav2Vec2Model), "hubert": (tf.HubertConfig, tf.HubertModel),
               "wavlm": (tf.WavLMConfig, tf.WavLMModel), "data2vec": (tf.Data2VecAudioConfig, tf.Data2VecAudioModel)}
    return _wave_model(*classes[kind], normalize=kind != "hubert")


KINDS = ["ast", "wav2vec2", "hubert", "wavlm", "data2vec", "whisper"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    out = {}
    for kind in KINDS:
        folder = tmp_path_factory.mktemp(kind)
        model, extractor = build(kind)
        model.save_pretrained(folder)
        extractor.save_pretrained(folder)
        out[kind] = folder
    return out


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
    cfg = copy / "config.json"
    cfg.write_text(cfg.read_text() + " ")
    assert load_hf(copy).checkpoint_sha256 != load_hf(folders["wavlm"]).checkpoint_sha256
