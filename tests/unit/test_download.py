"""Resumable downloads against a real HTTP server on 127.0.0.1."""

import os

import pytest
from dcase_fixtures import serve

from asd.data import download as dl
from asd.data.download import DownloadError, download, fetch_all


@pytest.fixture
def payload(tmp_path):
    srv_dir = tmp_path / "srv"
    srv_dir.mkdir()
    data = os.urandom(3 * 1024 * 1024 + 123)  # several read chunks
    (srv_dir / "dev_fan.zip").write_bytes(data)
    return srv_dir, data


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(dl, "BACKOFF_S", 0.01)


def test_plain_download(tmp_path, payload):
    srv_dir, data = payload
    with serve(srv_dir) as srv:
        got, resumed = download(f"{srv.url}/dev_fan.zip", tmp_path / "out" / "dev_fan.zip", progress=False)
    assert (tmp_path / "out" / "dev_fan.zip").read_bytes() == data
    assert got == len(data) and not resumed
    assert not (tmp_path / "out" / "dev_fan.zip.part").exists()


def test_cut_connection_resumes_with_range(tmp_path, payload):
    srv_dir, data = payload
    with serve(srv_dir) as srv:
        srv.cut_once.add("dev_fan.zip")
        download(f"{srv.url}/dev_fan.zip", tmp_path / "dev_fan.zip", progress=True)
        ranges = [r for n, r in srv.requests if n == "dev_fan.zip"]
    assert (tmp_path / "dev_fan.zip").read_bytes() == data
    assert ranges[0] is None and ranges[1] and ranges[1].startswith("bytes=") and ranges[1] != "bytes=0-"


def test_interrupted_run_resumes_on_next_run(tmp_path, payload):
    srv_dir, data = payload
    dest = tmp_path / "dev_fan.zip"
    with serve(srv_dir) as srv:
        srv.cut_once.add("dev_fan.zip")
        with pytest.raises(DownloadError, match="run the same command again to resume"):
            download(f"{srv.url}/dev_fan.zip", dest, progress=False, retries=0)
        part = tmp_path / "dev_fan.zip.part"
        assert not dest.exists() and 0 < part.stat().st_size < len(data)
        have = part.stat().st_size
        download(f"{srv.url}/dev_fan.zip", dest, progress=False)  # the "next run"
        assert srv.requests[-1][1] == f"bytes={have}-"
    assert dest.read_bytes() == data


def test_server_ignoring_range_restarts_cleanly(tmp_path, payload):
    srv_dir, data = payload
    (tmp_path / "dev_fan.zip.part").write_bytes(b"garbage that is not the start of the file")
    with serve(srv_dir) as srv:
        srv.ignore_range = True
        download(f"{srv.url}/dev_fan.zip", tmp_path / "dev_fan.zip", progress=False)
        assert srv.requests[0][1] is not None  # we asked for a range; the server answered 200
    assert (tmp_path / "dev_fan.zip").read_bytes() == data


def test_complete_part_file_is_finished_without_body(tmp_path, payload):
    srv_dir, data = payload
    (tmp_path / "dev_fan.zip.part").write_bytes(data)
    with serve(srv_dir) as srv:
        download(f"{srv.url}/dev_fan.zip", tmp_path / "dev_fan.zip", progress=False)  # server answers 416
    assert (tmp_path / "dev_fan.zip").read_bytes() == data


def test_short_bodies_fail_after_retries_and_keep_part(tmp_path, payload):
    srv_dir, data = payload
    with serve(srv_dir) as srv:
        srv.short_always.add("dev_fan.zip")
        srv.ignore_range = True  # every attempt restarts and is cut again
        with pytest.raises(DownloadError, match=r"dev_fan.zip.*after 3 attempts"):
            download(f"{srv.url}/dev_fan.zip", tmp_path / "dev_fan.zip", progress=False, retries=2)
        assert len(srv.requests) == 3
    assert not (tmp_path / "dev_fan.zip").exists()  # never renamed while incomplete


def test_404_is_not_retried(tmp_path, payload):
    srv_dir, _ = payload
    with serve(srv_dir) as srv:
        with pytest.raises(DownloadError, match="HTTP 404.*mirror"):
            download(f"{srv.url}/missing.zip", tmp_path / "missing.zip", progress=False)
        assert len(srv.requests) == 1


def test_unreachable_server_retries_then_fails(tmp_path):
    with pytest.raises(DownloadError, match="cannot connect"):
        download("http://127.0.0.1:9/x.zip", tmp_path / "x.zip", progress=False, retries=1)


def test_fetch_all_prefers_local_then_present_then_mirror(tmp_path, payload):
    srv_dir, data = payload
    (srv_dir / "b.csv").write_text("x")
    local = tmp_path / "local"
    local.mkdir()
    (local / "a.zip").write_bytes(b"local")
    out = tmp_path / "archives"
    out.mkdir()
    (out / "c.zip").write_bytes(b"present")
    with serve(srv_dir) as srv:
        files = [("a.zip", "http://invalid.example/a.zip"), ("c.zip", "http://invalid.example/c.zip"),
                 ("dev_fan.zip", "http://invalid.example/dev_fan.zip"), ("b.csv", "http://invalid.example/b.csv")]
        paths, summary = fetch_all(files, out, mirror=srv.url + "/", local_dir=local, progress=False)
        assert sorted(n for n, _ in srv.requests) == ["b.csv", "dev_fan.zip"]
    assert paths["a.zip"] == local / "a.zip" and paths["c.zip"] == out / "c.zip"
    assert paths["dev_fan.zip"].read_bytes() == data
    assert summary.downloaded == ["dev_fan.zip", "b.csv"] and summary.present == ["c.zip"]
    assert summary.local == ["a.zip"] and summary.bytes == len(data) + 1
    assert "2 downloaded" in summary.line() and "1 already present" in summary.line()
