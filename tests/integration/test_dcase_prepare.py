"""download -> extract -> index for every year, against tiny archives served on 127.0.0.1."""

import logging
import time

import pytest
from dcase_fixtures import build_year, corrupt, serve

from asd.data import download as dl
from asd.data.archives import ArchiveError, marker_path
from asd.data.dcase import check_index, prepare_dcase
from asd.data.index import ClipIndexError, read_index
from asd.data.years import get_year


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(dl, "BACKOFF_S", 0.01)


def _rows(df):
    return {(r.split, r.machine, r.phase, r.file): (r.section, r.domain, r.phase, r.label, r.attributes)
            for r in df.itertuples()}


# One machine per split is enough to cover a year's layout; 2024 adds the hidden-attribute machines,
# the renamed (_r2) archive and the RoboticArm list defect; 2022 ToyCar carries the domain defect.
CASES = {
    "dcase2020": ["fan", "ToyCar"],
    "dcase2021": ["gearbox"],
    "dcase2022": ["ToyCar", "bearing"],
    "dcase2023": ["fan", "bandsaw"],
    "dcase2024": ["gearbox", "AirCompressor", "3DPrinter", "RoboticArm", "BrushlessMotor"],
    "dcase2025": ["bearing", "AutoTrash"],
}


@pytest.mark.parametrize("dataset", list(CASES))
def test_every_clip_indexed_right(tmp_path, dataset):
    machines = CASES[dataset]
    built = build_year(dataset, tmp_path / "srv", machines)
    with serve(tmp_path / "srv") as srv:
        out = prepare_dcase(dataset, tmp_path / "data", machines=machines, mirror=srv.url, progress=False)
    assert out == tmp_path / "data" / dataset / "index.csv"
    df = read_index(tmp_path / "data", dataset)
    assert _rows(df) == built.expected  # same clips, and each with its section, domain, phase, label, attrs
    assert (df["year"] == get_year(dataset).year).all()
    ev = df[(df["split"] == "eval") & (df["phase"] == "test")]
    assert len(ev) and (ev["label"] != "unknown").all()
    for p in df["abspath"]:
        assert open(p, "rb").read(4) == b"RIFF"


def test_2022_domains_come_from_the_evaluator(tmp_path):
    built = build_year("dcase2022", tmp_path / "srv", ["ToyCar"])
    with serve(tmp_path / "srv") as srv:
        prepare_dcase("dcase2022", tmp_path / "data", machines=["ToyCar"], split="eval", mirror=srv.url,
                      progress=False)
    listed = (tmp_path / "srv" / "eval_data_list_2022.csv").read_text()
    df = read_index(tmp_path / "data", "dcase2022")
    ev = df[df["phase"] == "test"]
    wrong_in_list = [f for f, d in zip(ev["file"], ev["domain"]) if f"{f},section_{f[8:10]}_{d}_" not in listed]
    assert wrong_in_list  # the fixture list carries the defect, the index does not
    assert all(built.expected[("eval", "ToyCar", "test", f)][1] == d for f, d in zip(ev["file"], ev["domain"]))


def test_2023_all_21_archives(tmp_path):
    """Acceptance: the 21 official 2023 archive names + eval_data_list_2023.csv -> 14 machines, all labelled."""
    built = build_year("dcase2023", tmp_path / "srv", n_train=1, n_test=1)
    names = sorted(p.name for p in (tmp_path / "srv").iterdir())
    assert len([n for n in names if n.endswith(".zip")]) == 21 and "eval_data_list_2023.csv" in names
    with serve(tmp_path / "srv") as srv:
        prepare_dcase("dcase2023", tmp_path / "data", mirror=srv.url, progress=False)
        assert {n for n, _ in srv.requests} == set(names)
    df = read_index(tmp_path / "data", "dcase2023")
    assert df["machine"].nunique() == 14
    ev = df[(df["split"] == "eval") & (df["phase"] == "test")]
    assert ev["machine"].nunique() == 7 and len(ev) == 7 * 4
    assert set(ev["label"]) == {"normal", "anomaly"} and set(ev["domain"]) == {"source", "target"}
    assert _rows(df) == built.expected
    assert check_index("dcase2023", tmp_path / "data")  # tiny counts: warnings, not errors


def test_cut_mid_file_then_resume_and_second_run_is_noop(tmp_path):
    build_year("dcase2023", tmp_path / "srv", ["fan", "bandsaw"])
    data = tmp_path / "data"
    with serve(tmp_path / "srv") as srv:
        srv.cut_once.add("eval_data_bandsaw_test.zip")
        prepare_dcase("dcase2023", data, machines=["fan", "bandsaw"], mirror=srv.url, progress=False)
        ranged = [r for n, r in srv.requests if n == "eval_data_bandsaw_test.zip"]
        assert len(ranged) == 2 and ranged[1].startswith("bytes=")
        first = read_index(data, "dcase2023")
        marker = marker_path(data / "dcase2023/archives/dev_fan.zip", data / "dcase2023/dev_data/raw")
        mtime = marker.stat().st_mtime_ns
        n = len(srv.requests)
        t0 = time.monotonic()
        prepare_dcase("dcase2023", data, machines=["fan", "bandsaw"], mirror=srv.url, progress=False)
        assert time.monotonic() - t0 < 2.0
        assert len(srv.requests) == n  # nothing fetched again
        assert marker.stat().st_mtime_ns == mtime  # nothing extracted again
        assert read_index(data, "dcase2023").equals(first)
        # archives deleted after unpacking (to save space) are not fetched again
        for p in (data / "dcase2023/archives").glob("*.zip"):
            p.unlink()
        prepare_dcase("dcase2023", data, machines=["fan", "bandsaw"], mirror=srv.url, progress=False)
        assert len(srv.requests) == n
    assert read_index(data, "dcase2023").equals(first)


def test_interrupted_download_resumes_on_next_run(tmp_path, monkeypatch):
    build_year("dcase2021", tmp_path / "srv", ["valve"])
    monkeypatch.setattr(dl, "RETRIES", 0)
    with serve(tmp_path / "srv") as srv:
        srv.cut_once.add("eval_data_valve_test.zip")
        with pytest.raises(dl.DownloadError, match="eval_data_valve_test.zip"):
            prepare_dcase("dcase2021", tmp_path / "data", machines=["valve"], mirror=srv.url, progress=False)
        assert (tmp_path / "data/dcase2021/archives/eval_data_valve_test.zip.part").exists()
        assert not (tmp_path / "data/dcase2021/index.csv").exists()
        prepare_dcase("dcase2021", tmp_path / "data", machines=["valve"], mirror=srv.url, progress=False)
        assert [r for n, r in srv.requests if n == "eval_data_valve_test.zip"][-1].startswith("bytes=")
    df = read_index(tmp_path / "data", "dcase2021")
    assert (df.loc[df["phase"] == "test", "label"] != "unknown").all()


def test_corrupted_archive_clear_error_nothing_marked(tmp_path):
    build_year("dcase2023", tmp_path / "srv", ["valve"])
    corrupt(tmp_path / "srv" / "dev_valve.zip")
    data = tmp_path / "data"
    with serve(tmp_path / "srv") as srv:
        with pytest.raises(ArchiveError, match=r"dev_valve.zip is corrupted.*moved to dev_valve.zip.corrupt"):
            prepare_dcase("dcase2023", data, machines=["valve"], mirror=srv.url, progress=False)
    raw = data / "dcase2023/dev_data/raw"
    assert not marker_path(data / "dcase2023/archives/dev_valve.zip", raw).exists()
    assert not (raw / "valve").exists() and not (data / "dcase2023/index.csv").exists()
    assert not (data / "dcase2023/archives/dev_valve.zip").exists()  # the next run downloads it again


def test_check_reports_a_missing_clip(tmp_path):
    build_year("dcase2023", tmp_path / "srv", ["ToyDrone"])
    data = tmp_path / "data"
    with serve(tmp_path / "srv") as srv:
        prepare_dcase("dcase2023", data, machines=["ToyDrone"], mirror=srv.url, progress=False)
    assert check_index("dcase2023", data)  # counts differ from the official ones: warnings only
    with pytest.raises(ClipIndexError, match="--strict"):
        check_index("dcase2023", data, strict=True)
    victim = data / "dcase2023/eval_data/raw/ToyDrone/test/section_00_0002.wav"
    victim.unlink()
    with pytest.raises(ClipIndexError, match="1 clip.*missing on disk.*section_00_0002.wav"):
        check_index("dcase2023", data)


def test_ground_truth_without_clip_is_an_error(tmp_path):
    build_year("dcase2023", tmp_path / "srv", ["ToyTank"], skip={"section_00_0001.wav"})
    with serve(tmp_path / "srv") as srv:
        with pytest.raises(ClipIndexError, match="1 ground-truth row.*'ToyTank' have no clip.*section_00_0001.wav"):
            prepare_dcase("dcase2023", tmp_path / "data", machines=["ToyTank"], mirror=srv.url, progress=False)


def test_clip_without_ground_truth_is_an_error(tmp_path):
    build_year("dcase2023", tmp_path / "srv", ["Vacuum"])
    gt = tmp_path / "srv" / "eval_data_list_2023.csv"
    gt.write_text("\r\n".join(line for line in gt.read_text().splitlines() if not line.startswith("section_00_0003")))
    with serve(tmp_path / "srv") as srv:
        with pytest.raises(ClipIndexError,
                           match="1 eval test clip.*'Vacuum' have no ground truth.*section_00_0003.wav"):
            prepare_dcase("dcase2023", tmp_path / "data", machines=["Vacuum"], mirror=srv.url, progress=False)


def test_unknown_names_reported_with_counts(tmp_path, caplog):
    import zipfile

    build_year("dcase2023", tmp_path / "srv", ["slider"])
    with zipfile.ZipFile(tmp_path / "srv" / "dev_slider.zip", "a") as zf:
        zf.writestr("slider/train/recording_01.wav", b"RIFF")
        zf.writestr("slider/train/recording_02.wav", b"RIFF")
    with serve(tmp_path / "srv") as srv, caplog.at_level(logging.WARNING):
        prepare_dcase("dcase2023", tmp_path / "data", machines=["slider"], split="dev", mirror=srv.url,
                      progress=False)
        assert "2 WAV file(s): unrecognised 2023 file name (first: dev_data/raw/slider/train/recording_01.wav)" \
            in caplog.text
        with pytest.raises(ClipIndexError, match="--strict.*2 WAV file"):
            prepare_dcase("dcase2023", tmp_path / "data", machines=["slider"], split="dev", mirror=srv.url,
                          progress=False, strict=True)


def test_split_and_machines_fetch_only_what_they_need(tmp_path):
    build_year("dcase2024", tmp_path / "srv", ["gearbox", "ToothBrush"])
    with serve(tmp_path / "srv") as srv:
        prepare_dcase("dcase2024", tmp_path / "data", split="dev", machines=["gearbox", "ToothBrush"],
                      mirror=srv.url, progress=False)
        assert {n for n, _ in srv.requests} == {
            "dev_gearbox.zip", "dev_data_attr_gearbox_attributes_00_train_correspondence.csv",
            "dev_data_attr_gearbox_attributes_00_test_correspondence.csv"}
        # a later run adds the eval split to the same index
        prepare_dcase("dcase2024", tmp_path / "data", split="eval", machines=["ToothBrush"], mirror=srv.url,
                      progress=False)
    df = read_index(tmp_path / "data", "dcase2024")
    assert set(df["machine"]) == {"gearbox", "ToothBrush"} and set(df["split"]) == {"dev", "eval"}
    with pytest.raises(ValueError, match="unknown machine type.*available"):
        prepare_dcase("dcase2024", tmp_path / "data", machines=["toaster"], progress=False)


def test_local_archives_dir_needs_no_server(tmp_path):
    build_year("dcase2021", tmp_path / "local", ["fan"])
    prepare_dcase("dcase2021", tmp_path / "data", machines=["fan"], archives=tmp_path / "local", progress=False)
    df = read_index(tmp_path / "data", "dcase2021")
    assert len(df) and (df.loc[df["phase"] == "test", "label"] != "unknown").all()
    downloaded = tmp_path / "data/dcase2021/archives"
    assert not downloaded.exists() or not any(downloaded.iterdir())  # read in place, nothing copied


def test_2026_eval_without_test_archives(tmp_path):
    build_year("dcase2026", tmp_path / "srv", ["fan", "Sander"])
    with serve(tmp_path / "srv") as srv:
        prepare_dcase("dcase2026", tmp_path / "data", machines=["fan", "Sander"], mirror=srv.url, progress=False)
    df = read_index(tmp_path / "data", "dcase2026")
    assert set(df.loc[df["split"] == "eval", "phase"]) == {"train"}
    assert get_year("dcase2026").channel == 0 and get_year("dcase2026").channels == 2
