"""Issue 12, cases 1, 2, 7, 12 (clip length) and 13: audio verified at the door, caches keyed by content,
the toy scanner's rules and its --check. Real WAV files, a real (tiny) toy set per test."""

from __future__ import annotations

import os
import shutil
import struct

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from asd.data.audio import AudioError, Expect, decode, read_wav
from asd.data.index import ClipIndexError, excluded_clips, read_index, read_rows
from asd.data.prepare import check, prepare
from asd.data.toy import ToySpec
from asd.data.years import get_year

SMALL = ToySpec(seconds=1.0, n_source_train=3, n_target_train=1, n_test=1, n_dev_machines=1, n_eval_machines=1)
FAN = "dev_data/raw/fan"


@pytest.fixture
def data(tmp_path):
    prepare("toy", tmp_path, toy_spec=SMALL, progress=False)
    return tmp_path


def _clip(data, name: str) -> str:
    df = read_index(data, "toy")
    return df.loc[df["file"].str.contains(name), "abspath"].iloc[0]


def _cp_p(src, dst) -> None:
    """What `cp -p src dst` does: the bytes of src, written over dst in place, src's timestamps kept."""
    st = os.stat(src)
    shutil.copyfile(src, dst)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


# ---- case 1: a clip replaced by another of the same size, timestamps kept, is never served stale ----

def test_replaced_clip_is_never_served_from_the_cache(data):
    from asd.config.recipes import load_recipe
    from asd.data.waves import wave_store
    from asd.search.embeddings import frontend_key

    cfg = load_recipe("raw_spec", ["data.clip_seconds=1"])
    rows = read_index(data, "toy", ["fan"])
    rows = rows[rows["phase"] == "train"].reset_index(drop=True)
    before = wave_store(rows, cfg).batch([0], 16000)
    key_before = frontend_key(cfg, rows)
    victim, other = rows["abspath"][0], rows["abspath"][1]
    old_size, old_mtime = os.path.getsize(victim), os.stat(victim).st_mtime_ns
    _cp_p(other, victim)
    os.utime(victim, ns=(old_mtime, old_mtime))  # rsync -a / cp -p of a corrected file: same size, same mtime
    assert (os.path.getsize(victim), os.stat(victim).st_mtime_ns) == (old_size, old_mtime)
    truth = sf.read(other, dtype="float32")[0]
    served = wave_store(rows, cfg).batch([0], 16000)[0]
    assert not np.allclose(served, before[0])
    np.testing.assert_allclose(served, truth, atol=1 / 32768)
    assert frontend_key(cfg, rows) != key_before  # the search's embedding store misses too
    # `asd prepare` re-verifies the changed clip and records its new content hash.
    prepare("toy", data, progress=False)
    row = read_rows(data / "toy" / "index.csv").set_index("path").loc[os.path.relpath(victim, data / "toy")]
    assert row["sha256"] == __import__("hashlib").sha256(open(other, "rb").read()).hexdigest()


def test_prepare_records_hashes_and_reuses_unchanged_clips(data, monkeypatch):
    import asd.data.verify as verify

    rows = read_rows(data / "toy" / "index.csv")
    assert (rows["frames"] == 16000).all() and rows["sha256"].str.fullmatch(r"[0-9a-f]{64}").all()
    assert (rows["bad"] == "").all()
    decoded = []
    real = verify.check_clip
    monkeypatch.setattr(verify, "check_clip", lambda p, *a: decoded.append(p) or real(p, *a))
    prepare("toy", data, progress=False)
    assert decoded == []  # nothing changed: nothing decoded again
    os.utime(_clip(data, "source_train_normal_0000"))  # touched: re-verified, the rest is not
    prepare("toy", data, progress=False)
    assert len(decoded) == 1


# ---- case 2: corrupt audio is an error naming the file and the problem -----------------------------

def _wav(path, x, subtype="PCM_16", sr=16000):
    sf.write(path, x, sr, subtype=subtype)
    return path


def test_truncated_nan_inf_and_empty_clips_are_refused(tmp_path):
    x = (np.random.default_rng(0).standard_normal(16000) * 0.1).astype("float32")
    full = _wav(tmp_path / "full.wav", x).read_bytes()
    (tmp_path / "cut.wav").write_bytes(full[: len(full) // 2])
    with pytest.raises(AudioError, match=r"cut\.wav: truncated: the header declares 16000 frames, the file holds 7989"):
        read_wav(tmp_path / "cut.wav")
    y = x.copy()
    y[100] = np.nan
    _wav(tmp_path / "nan.wav", y, "FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav: 1 sample\(s\) are NaN or infinite \(first at frame 100\)"):
        read_wav(tmp_path / "nan.wav")
    y[100] = np.inf
    _wav(tmp_path / "inf.wav", y, "FLOAT")
    with pytest.raises(AudioError, match=r"inf\.wav: 1 sample\(s\) are NaN or infinite"):
        read_wav(tmp_path / "inf.wav")
    _wav(tmp_path / "loud.wav", x * 20, "FLOAT")
    with pytest.raises(AudioError, match=r"loud\.wav: float samples outside \[-1, 1\]"):
        read_wav(tmp_path / "loud.wav")
    _wav(tmp_path / "st0.wav", np.zeros((0, 2), "float32"))  # case 10: once a ZeroDivisionError
    with pytest.raises(AudioError, match=r"st0\.wav: empty WAV \(0 samples\)"):
        read_wav(tmp_path / "st0.wav", channel=0)


def test_prepare_names_a_bad_clip_and_skip_bad_leaves_it_out_visibly(data):
    victim = _clip(data, "source_train_normal_0001")
    raw = open(victim, "rb").read()
    open(victim, "wb").write(raw[: len(raw) - 5000])
    rel = os.path.relpath(victim, data / "toy")
    with pytest.raises(ClipIndexError, match=rf"1 bad clip\(s\) \(first: {rel}: truncated.*--skip-bad"):
        prepare("toy", data, progress=False)
    listed = pd.read_csv(data / "toy" / "bad_clips.csv")
    assert list(listed["path"]) == [rel] and listed["reason"][0].startswith("truncated")
    prepare("toy", data, progress=False, skip_bad=True)
    assert rel not in set(read_index(data, "toy")["path"])
    bad = excluded_clips(data, "toy", ["fan"])
    assert list(bad["path"]) == [rel] and bad["bad"].iloc[0].startswith("truncated")
    with pytest.raises(AudioError, match="truncated"):  # training decodes through the same checks
        from asd.config.recipes import load_recipe
        from asd.data.waves import wave_store

        rows = read_rows(data / "toy" / "index.csv").assign(abspath=lambda d: [str(data / "toy" / p) for p in d["path"]])
        wave_store(rows[rows["path"] == rel], load_recipe("raw_spec"))


# ---- case 12 (clip length) -------------------------------------------------------------------------

def test_clip_length_limits(tmp_path):
    expect = get_year("dcase2023").expect()
    assert (expect.min_seconds, expect.max_seconds) == (1.0, 27.0)
    long = _wav(tmp_path / "long.wav", np.zeros(30 * 16000, "float32"))
    with pytest.raises(AudioError, match=r"long\.wav: 30\.000 s long, outside the 1-27 s .*--max-clip-seconds"):
        decode(long.read_bytes(), long, expect)
    assert len(decode(long.read_bytes(), long, get_year("dcase2023").expect(max_seconds=40))) == 30 * 16000
    # A header that claims 6,553 s over one second of data: refused as truncated, never read as a clip.
    data = bytearray(_wav(tmp_path / "liar.wav", np.zeros(16000, "float32")).read_bytes())
    struct.pack_into("<I", data, 40, 6553 * 16000 * 2)
    with pytest.raises(AudioError, match="header declares 104848000 frames, the file holds 16000"):
        decode(bytes(data), "liar.wav", expect)
    with pytest.raises(AudioError, match=r"0\.500 s long, outside the 1-27 s this dataset's clips last; replace"):
        decode(_wav(tmp_path / "short.wav", np.zeros(8000, "float32")).read_bytes(), "short.wav", expect)


# ---- case 13: the toy scanner shares the DCASE scanner's rules ------------------------------------

def test_toy_scanner_rules(data, caplog):
    base = data / "toy" / FAN
    good = _clip(data, "source_train_normal_0000")
    upper = base / "train" / "section_00_source_train_normal_0007_spd_1_blade_4.WAV"
    shutil.copy(good, upper)
    (base / "train" / "sub").mkdir()
    shutil.copy(good, base / "train" / "sub" / "section_00_source_train_normal_0008_spd_1_blade_4.wav")
    shutil.copy(good, base / "train" / "section_00_source_test_anomaly_0009_spd_1_blade_4.wav")
    shutil.copy(good, base / "train" / "section_00_source_train_normal_0010_spd_1_blade_4.tmp.wav")
    shutil.copy(good, base / "train" / ".section_00_source_train_normal_0011.wav.123-abcd.tmp")
    with pytest.raises(ClipIndexError, match=r"--strict: \d problem"):
        prepare("toy", data, progress=False, strict=True)
    # Without --strict: every unindexed WAV is reported with its reason; the .WAV clip counts, so the
    # set no longer matches its spec and that is an error too.
    with pytest.raises(ClipIndexError, match=r"differs from its spec .*dev/fan source train normal: 4 \(spec 3\)"):
        prepare("toy", data, progress=False)
    text = caplog.text
    assert "WAV outside <machine>/" in text and "sub/section_00_source_train_normal_0008" in text
    assert "name disagrees with its folder" in text and "test_anomaly_0009" in text
    assert "temporary file of an interrupted write" in text and "0010_spd_1_blade_4.tmp.wav" in text
    assert "0011" not in text  # a hidden temporary file is not a clip candidate at all
    upper.unlink()
    prepare("toy", data, progress=False)  # the reported files are warnings, the counts are right again
    df = read_index(data, "toy")
    assert not df["file"].str.contains("0008|0009|0010|0011").any()


# ---- case 7: --check of the toy set reads the disk and the audio, not only the index --------------

def test_toy_check_finds_missing_files_rows_and_changed_audio(data):
    assert check("toy", data, progress=False) == []
    index = data / "toy" / "index.csv"
    saved = index.read_bytes()
    rows = pd.read_csv(index, keep_default_na=False, dtype=str)
    rows.drop(index=3).to_csv(index, index=False)
    with pytest.raises(ClipIndexError, match=r"differs from its spec|on disk are not in"):
        check("toy", data, progress=False)
    index.write_bytes(saved)
    victim = _clip(data, "source_test_normal_0000")
    backup = open(victim, "rb").read()
    os.remove(victim)
    with pytest.raises(ClipIndexError, match=r"not on disk as clips \(first: .*source_test_normal_0000"):
        check("toy", data, progress=False)
    open(victim, "wb").write(backup[:-4] + b"\x01\x02\x03\x04")  # same length, different audio
    with pytest.raises(ClipIndexError, match=r"1 clip\(s\) changed on disk since `asd prepare`"):
        check("toy", data, progress=False)
    open(victim, "wb").write(backup)
    assert check("toy", data, progress=False) == []


def test_decode_checks_channels_of_the_year(tmp_path):
    st = _wav(tmp_path / "st.wav", np.zeros((16000, 2), "float32"))
    assert len(decode(st.read_bytes(), st, get_year("dcase2026").expect(), channel=0)) == 16000
    with pytest.raises(AudioError, match=r"2 channel\(s\), expected 1 for this dataset"):
        decode(st.read_bytes(), st, Expect(16000, 1))
