"""Test helpers for the DCASE data pipeline: a real HTTP server and tiny archives in the official layouts.

``serve(dir)`` starts a ``http.server`` on 127.0.0.1 in a thread (Range support, plus modes that cut a
connection mid-file once, ignore Range, or always send short bodies). ``build_year(dataset, dir)``
writes small zip archives with the internal layout and file names of the real ones, and the official
ground-truth files, and returns what every clip must be indexed as.

Import from a test module: ``from dcase_fixtures import serve, build_year`` (tests/ is on sys.path).
"""

from __future__ import annotations

import csv
import io
import re
import threading
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import soundfile as sf

# ---- HTTP server -----------------------------------------------------------------------------------


class _Handler(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):  # noqa: N802 (http.server API)
        srv = self.server
        name = self.path.lstrip("/").split("?")[0]
        path = Path(srv.root) / name
        rng = self.headers.get("Range")
        srv.requests.append((name, rng))
        if not path.is_file():
            self.send_error(404, "not found")
            return
        data = path.read_bytes()
        start = 0
        if rng and not srv.ignore_range:
            m = re.match(r"bytes=(\d+)-$", rng)
            start = int(m[1]) if m else 0
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        cut = name in srv.cut_once or name in srv.short_always
        if cut:
            srv.cut_once.discard(name)
            self.wfile.write(body[: max(1, len(body) // 2)])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(2)  # the client sees the connection drop mid-file
            except OSError:
                pass
            return
        self.wfile.write(body)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = str(root)
        self.requests: list[tuple[str, str | None]] = []
        self.cut_once: set[str] = set()  # names whose next GET is cut half-way
        self.short_always: set[str] = set()  # names always cut half-way
        self.ignore_range = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextmanager
def serve(root: Path):
    """Serve ``root`` flat over HTTP on 127.0.0.1; yields the :class:`Server` (``.url``, ``.requests``)."""
    srv = Server(root)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


# ---- tiny WAVs and archives -------------------------------------------------------------------------

_WAV: dict[int, bytes] = {}


def wav_bytes(channels: int = 1) -> bytes:
    """A real 16 kHz 16-bit WAV of 1 s, the shortest clip prepare accepts (generated once, shared by every clip)."""
    if channels not in _WAV:
        buf = io.BytesIO()
        x = (np.random.default_rng(0).standard_normal((16000, channels)) * 0.01).astype("float32")
        sf.write(buf, x, 16000, format="WAV", subtype="PCM_16")
        _WAV[channels] = buf.getvalue()
    return _WAV[channels]


def write_zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


@dataclass
class Built:
    """What was built: ``expected[(split, machine, phase, file)] = (section, domain, phase, label, attributes)``."""

    root: Path
    names: list[str] = field(default_factory=list)  # every file written, flat
    expected: dict = field(default_factory=dict)

    def eval_test(self):
        return {k: v for k, v in self.expected.items() if k[0] == "eval" and k[2] == "test"}


def _attrs(pairs) -> str:
    return ";".join(f"{k}={v}" for k, v in pairs)


# Attribute strings in the style of each machine (docs/data.md, file names); tokens alternate key/value.
_ATTR = {
    "fan": ("m-n_W", [("m-n", "W")]), "bearing": ("vel_16_loc_A", [("vel", "16"), ("loc", "A")]),
    "gearbox": ("volt_1.5_wt_100", [("volt", "1.5"), ("wt", "100")]),
    "ToyCar": ("car_A1_spd_28V_mic_2", [("car", "A1"), ("spd", "28V"), ("mic", "2")]),
    "bandsaw": ("vel_12", [("vel", "12")]), "ToyDrone": ("mdl_A_spd_1", [("mdl", "A"), ("spd", "1")]),
    "AirCompressor": ("fl_2_nos_0", [("fl", "2"), ("nos", "0")]),
    "3DPrinter": ("mdl_A_spd_1", [("mdl", "A"), ("spd", "1")]),
    "RoboticArm": ("weight15_BckgF", [("weight15", "BckgF")]),
    "AutoTrash": ("id_A1_spd_1_mic_2", [("id", "A1"), ("spd", "1"), ("mic", "2")]),
}


def _attr(machine: str) -> tuple[str, list]:
    return _ATTR.get(machine, ("pat_00", [("pat", "00")]))


def build_year(dataset: str, root: Path, machines: list[str] | None = None, n_train: int = 2,
               n_test: int = 1, skip: set[str] | None = None) -> Built:
    """Write the archives and ground-truth files of ``dataset`` for ``machines`` into ``root`` (flat).

    Per section: ``n_train`` source + 1 target train clips, ``n_test`` clips per domain x label in test.
    ``skip``: distributed file names to leave out of the archives (ground truth still lists them).
    """
    from asd.data.years import get_year

    year = get_year(dataset)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    built = Built(root)
    skip = skip or set()
    want = [f for f in year.files if not machines or not f.machine or f.machine in machines]
    members: dict[str, dict[str, bytes]] = {f.name: {} for f in want if f.is_archive}
    gt_list: dict[str, list[list[str]]] = {}
    domains: dict[tuple[str, int], list[tuple[str, int]]] = {}
    corr: dict[tuple[str, str, str], list[tuple[str, str]]] = {}
    y = year.year
    base = 1 if y == 2024 else 0  # 2024 counts from 1
    by_kind = {(f.kind, f.machine): f.name for f in want if f.is_archive}
    wav = wav_bytes(year.channels)

    def add(kind, split, machine, folder, name, truth):
        if name in skip or (kind, machine) not in by_kind:  # skipped, or an archive not published (2026)
            return
        members[by_kind[(kind, machine)]][f"{machine}/{folder}/{name}"] = wav
        built.expected[(split, machine, truth[2], name)] = truth

    for split in ("dev", "eval"):
        for m in year.machines(split):
            if machines and m not in machines:
                continue
            hidden = m in year.hidden_attributes.get(split, ())
            attr_s, attr_p = _attr(m)
            published = {ph for ph in ("train", "test") for f in year.files if f.kind == "gt_attributes"
                         and f.split == split and f.machine == m and f"_{ph}_correspondence" in f.name}
            shown = {ph: _attrs(attr_p) if not hidden or ph in published else "" for ph in ("train", "test")}
            for s in year.sections(split, m):
                anon_i = 0
                train_kind = "dev" if split == "dev" else "eval_train"
                test_kind = "dev" if split == "dev" else "eval_test"
                # --- train
                for dom, n in (("source", n_train), ("target", 1)):
                    if y == 2020 and dom == "target":
                        continue
                    for i in range(n):
                        idx = i + base
                        if y == 2020:
                            name = f"normal_id_{s:02d}_{idx:08d}.wav"
                            add(train_kind, split, m, "train", name, (s, "source", "train", "normal", ""))
                            continue
                        true = f"section_{s:02d}_{dom}_train_normal_{idx:04d}_{attr_s}.wav"
                        name = true.replace(attr_s, "noAttribute") if hidden else true
                        if hidden:
                            corr.setdefault((split, m, "train"), []).append((true, name))
                        add(train_kind, split, m, "train", name, (s, dom, "train", "normal", shown["train"]))
                # --- test
                for dom in (("source",) if y == 2020 else ("source", "target")):
                    for lab in ("normal", "anomaly"):
                        for i in range(n_test):
                            idx = i + base + (0 if lab == "normal" else 50)
                            folder = f"{dom}_test" if y == 2021 else "test"
                            if y == 2020:
                                true = f"{lab}_id_{s:02d}_{idx:08d}.wav"
                                attrs = ""
                            elif y == 2021:
                                true = f"section_{s:02d}_{dom}_test_{lab}_{idx:04d}.wav"
                                attrs = ""
                            else:
                                true = f"section_{s:02d}_{dom}_test_{lab}_{idx:04d}_{attr_s}.wav"
                                attrs = shown["test"]
                            if split == "dev":
                                name = true.replace(attr_s, "noAttribute") if hidden and y > 2021 else true
                                if hidden and y > 2021:
                                    corr.setdefault((split, m, "test"), []).append((true, name))
                                add(test_kind, split, m, folder, name, (s, dom, "test", lab, attrs))
                                continue
                            # eval test: anonymised names, truth in the eval list
                            if y == 2020:
                                anon = f"id_{s:02d}_{anon_i:08d}.wav"
                                row = [anon, true, "1" if lab == "anomaly" else "0"]
                            elif y == 2021:
                                anon = f"section_{s:02d}_{dom}_test_{anon_i:04d}.wav"
                                row = [anon, true]
                            else:
                                anon = f"section_{s:02d}_{anon_i + base:04d}.wav"
                                listed = true
                                attrs = _attrs(attr_p)  # eval test attributes are always published
                                if hidden and y == 2025:  # list shows attributes; file maps true -> anon
                                    corr.setdefault((split, m, "test"), []).append((true, anon))
                                elif hidden and "test" in published:
                                    listed = true.replace(attr_s, "noAttribute")
                                    corr.setdefault((split, m, "test"), []).append((true, listed))
                                if y == 2024 and m == "RoboticArm":  # the official list lacks 'test' here
                                    listed = listed.replace("_test_", "_")
                                list_dom = dom
                                if y == 2022 and m == "ToyCar" and anon_i % 2 == 0:
                                    # the list's domain token is wrong for ToyCar/ToyTrain; the
                                    # evaluator's domain file is right
                                    list_dom = "target" if dom == "source" else "source"
                                    listed = listed.replace(f"_{dom}_", f"_{list_dom}_", 1)
                                domains.setdefault((m, s), []).append((anon, int(dom == "target")))
                                row = [anon, listed]
                            anon_i += 1
                            gt_list.setdefault(m, []).append(row)
                            add(test_kind, split, m, folder, anon, (s, dom, "test", lab, attrs))
                if y == 2025:
                    for i in range(2):
                        add(train_kind, split, m, "supplemental", f"section_{s:02d}_machine_{i + 1:04d}_.wav",
                            (s, "source", "supplemental", "normal", "kind=machine"))
            if y >= 2022 and split == "dev":  # real 2022+ archives carry attribute CSVs
                members[by_kind[("dev", m)]][f"{m}/attributes_00.csv"] = b"file_name,d1p,d1v\n"

    for name, mem in members.items():
        write_zip(root / name, mem)
        built.names.append(name)
    for f in want:
        if f.kind == "gt_list":
            with open(root / f.name, "w", newline="") as fh:
                for m, rows in gt_list.items():
                    fh.write(m + "\r\n")
                    for r in rows:
                        fh.write(",".join(r) + "\r\n")
        elif f.kind == "gt_domain":
            mt, sec = re.match(r"ground_truth_(.+)_section_(\d+)_test\.csv", f.name).groups()
            with open(root / f.name, "w", newline="") as fh:
                for anon, d in domains.get((mt, int(sec)), []):
                    fh.write(f"{anon},{d}\n")
        elif f.kind == "gt_attributes":
            phase = "train" if "_train_correspondence" in f.name else "test"
            with open(root / f.name, "w", newline="") as fh:
                w = csv.writer(fh, lineterminator="\n")
                w.writerow(["source_file_name", "target_file_name"])
                w.writerows(corr.get((f.split, f.machine, phase), []))
        else:
            continue
        built.names.append(f.name)
    return built


def corrupt(path: Path) -> None:
    """Flip bytes a third into the archive, inside member data (the central directory stays readable)."""
    data = bytearray(Path(path).read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 16):
        data[i] ^= 0xFF
    Path(path).write_bytes(bytes(data))


def truncate(path: Path) -> None:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])

