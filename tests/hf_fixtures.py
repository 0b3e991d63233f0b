"""Tiny random Hugging Face audio encoders written with ``save_pretrained`` (model and feature extractor)."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers as tf

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


def write_folder(kind: str, folder: Path) -> Path:
    """A tiny random ``kind`` model and its feature extractor saved into ``folder``."""
    model, extractor = build(kind)
    model.save_pretrained(folder)
    extractor.save_pretrained(folder)
    return folder
