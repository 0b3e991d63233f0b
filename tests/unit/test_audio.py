"""Bad input gets an error that names the file and the fix."""

import numpy as np
import pytest
import soundfile as sf

from asd.data.audio import AudioError, fix_length, read_wav
from asd.data.groundtruth import GroundTruth
from asd.data.index import ClipIndexError
from asd.data.scan import build_index, problems
from asd.data.years import get_year


def test_reads_mono(tmp_path):
    p = tmp_path / "a.wav"
    sf.write(p, np.zeros(1600, np.float32), 16000, subtype="PCM_16")
    assert read_wav(p).shape == (1600,)


def test_not_a_wav(tmp_path):
    p = tmp_path / "section_00_source_train_normal_0000_a_1.wav"
    p.write_text("this is not audio")
    with pytest.raises(AudioError, match=r"section_00_source_train_normal_0000_a_1\.wav: not a readable WAV"):
        read_wav(p)


def test_wrong_sample_rate(tmp_path):
    p = tmp_path / "x.wav"
    sf.write(p, np.zeros(4410, np.float32), 44100)
    with pytest.raises(AudioError, match=r"x\.wav: sample rate 44100 Hz, expected 16000 Hz; resample"):
        read_wav(p)


def test_stereo(tmp_path):
    p = tmp_path / "st.wav"
    sf.write(p, np.zeros((1600, 2), np.float32), 16000)
    with pytest.raises(AudioError, match=r"st\.wav: 2 channels, expected mono"):
        read_wav(p)
    assert read_wav(p, channel=0).shape == (1600,)


def test_fix_length_tiles_and_crops():
    w = np.arange(3, dtype=np.float32)
    np.testing.assert_array_equal(fix_length(w, 7), [0, 1, 2, 0, 1, 2, 0])
    np.testing.assert_array_equal(fix_length(np.arange(10), 4), [0, 1, 2, 3])


def test_unknown_file_name_is_reported_not_skipped(tmp_path):
    d = tmp_path / "dev_data" / "raw" / "fan" / "train"
    d.mkdir(parents=True)
    sf.write(d / "section_00_source_train_normal_0000_a_1.wav", np.zeros(160, np.float32), 16000)
    sf.write(d / "recording_12.wav", np.zeros(160, np.float32), 16000)
    year, prepared = get_year("toy"), {"dev": {"fan"}}
    df, unknown, _ = build_index(year, tmp_path, prepared, GroundTruth())
    assert list(df["file"]) == ["section_00_source_train_normal_0000_a_1.wav"]
    assert unknown == {"unrecognised 2023 file name": ["dev_data/raw/fan/train/recording_12.wav"]}
    with pytest.raises(ClipIndexError, match=r"1 WAV file\(s\): unrecognised 2023 file name \(first: .*recording_12"):
        problems(year, df, GroundTruth(), prepared, unknown, strict=True)


def test_bad_clip_fails_evaluation_naming_it(toy_dir, tmp_path):
    """A corrupt clip in a prepared set stops extraction with its name (nothing silently dropped)."""
    import shutil

    from asd.config.recipes import load_recipe
    from asd.data.index import read_index
    from asd.training import embed

    data = tmp_path / "data"
    shutil.copytree(toy_dir / "toy", data / "toy")
    df = read_index(data, "toy", machines=["fan"])
    victim = df["abspath"].iloc[5]
    sf.write(victim, np.zeros((1600, 2), np.float32), 16000)
    with pytest.raises(AudioError, match=r"anomaly_0005.*: 2 channel\(s\), expected 1"):
        embed(load_recipe("raw_spec", ["data.clip_seconds=1"]), df)


def test_training_crop_shift_rules():
    from asd.data.waves import _start

    rng = np.random.default_rng(0)
    draws = lambda length, n, shift: {_start(length, n, rng, shift) for _ in range(300)}  # noqa: E731
    assert draws(10, 18, "tile") == {0, 1, 2}  # tiled twice (20), crop 18: ASDKit's 0-2 s of a 10-s clip in 18 s
    assert draws(10, 10, "tile") == {0} and draws(10, 18, "none") == {0}
    assert draws(10, 10, "roll") == set(range(10))  # a full-length clip is circularly shifted
    assert draws(30, 10, "none") == set(range(21))  # longer clips: a random crop whatever the rule
    assert _start(10, 18, None, "tile") == 0  # no generator: embedding, from sample 0
    np.testing.assert_array_equal(fix_length(np.arange(4), 4, 3), [3, 0, 1, 2])  # a start past the end wraps
