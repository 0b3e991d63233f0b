"""Safe, idempotent unpacking of archives."""

import shutil
import zipfile

import pytest
from dcase_fixtures import corrupt, truncate, wav_bytes, write_zip

from asd.data import archives
from asd.data.archives import ArchiveError, is_unpacked, marker_path, unpack


def _zip(tmp_path, members=None):
    path = tmp_path / "dev_fan.zip"
    write_zip(path, members or {f"fan/train/section_00_source_train_normal_{i:04d}_m-n_W.wav": wav_bytes()
                                for i in range(5)})
    return path


def test_unpack_once_then_noop(tmp_path):
    zp = _zip(tmp_path)
    dest = tmp_path / "raw"
    assert unpack(zp, dest, progress=False) is True
    files = sorted(p.name for p in (dest / "fan" / "train").iterdir())
    assert len(files) == 5 and is_unpacked(zp, dest)
    assert not any(p.name.startswith(".partial") for p in dest.iterdir())
    mtime = marker_path(zp, dest).stat().st_mtime_ns
    assert unpack(zp, dest, progress=False) is False
    assert marker_path(zp, dest).stat().st_mtime_ns == mtime


@pytest.mark.parametrize("bad", ["../evil.wav", "/abs/evil.wav", "fan/../../evil.wav"])
def test_refuses_path_escapes(tmp_path, bad):
    zp = tmp_path / "x.zip"
    with zipfile.ZipFile(zp, "w") as zf:
        zf.writestr("fan/train/ok.wav", b"x")
        zf.writestr(zipfile.ZipInfo(bad), b"x")
    with pytest.raises(ArchiveError, match="unsafe"):
        unpack(zp, tmp_path / "raw", progress=False)
    assert not (tmp_path / "raw" / "fan").exists() and not (tmp_path / "evil.wav").exists()


def test_refuses_symlinks(tmp_path):
    zp = tmp_path / "x.zip"
    info = zipfile.ZipInfo("fan/train/link.wav")
    info.create_system = 3
    info.external_attr = (0o120777 << 16)  # S_IFLNK
    with zipfile.ZipFile(zp, "w") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ArchiveError, match="symbolic link"):
        unpack(zp, tmp_path / "raw", progress=False)


@pytest.mark.parametrize("damage", [truncate, corrupt])
def test_damaged_archive_not_marked(tmp_path, damage):
    zp = _zip(tmp_path)
    damage(zp)
    dest = tmp_path / "raw"
    with pytest.raises(ArchiveError, match="dev_fan.zip.*(corrupt|truncated)"):
        unpack(zp, dest, progress=False)
    assert not is_unpacked(zp, dest) and not marker_path(zp, dest).exists()
    assert not (dest / "fan").exists()  # nothing half-extracted is left where the indexer looks
    assert not dest.exists() or not any(p.name.startswith(".partial") for p in dest.iterdir())


def test_free_space_check(tmp_path, monkeypatch):
    zp = _zip(tmp_path)
    monkeypatch.setattr(archives.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 10))
    with pytest.raises(ArchiveError, match="not enough free space.*dev_fan.zip"):
        unpack(zp, tmp_path / "raw", progress=False)


def test_replaced_archive_is_extracted_again(tmp_path):
    zp = _zip(tmp_path)
    dest = tmp_path / "raw"
    unpack(zp, dest, progress=False)
    write_zip(zp, {"fan/train/section_00_source_train_normal_0100_m-n_W.wav": wav_bytes(),
                   "fan/train/section_00_source_train_normal_0101_m-n_W.wav": wav_bytes()})
    assert unpack(zp, dest, progress=False) is True
