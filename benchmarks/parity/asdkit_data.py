"""ASDKit's view of an asd-prepared dataset: a patched copy of the checkout and its formatted layout.

ASDKit reads ``<data_dir>/formatted/<dcase>/raw/<machine>/{train,test}/<name>.wav`` where every
name carries domain, label and attributes (SPEC.md §1.4): its ``format`` step renames the eval test
clips with the ground-truth list. Here the same layout is made of symbolic links to the WAV files
that ``asd prepare`` wrote, so both tools read byte-identical clips; eval test clips get the name
the toy's ``eval_data_list_toy.csv`` (official list format) gives them. ASDKit's ``format`` itself
is not used: it checks the machine list against its fixed table of DCASE machine types.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd

ASDKIT_COMMIT = "ed27d82"
# ASDKit derives crop lengths, label paths and the official rule from a DCASE year name; the toy set
# has the DCASE 2023 layout and rule (one section, hmean of smix/tmix AUC and pAUC).
DCASE = "dcase2023"
PATCH = Path(__file__).with_name("asdkit.patch")


class ParityError(RuntimeError):
    """A setup problem the user can fix (wrong checkout, missing dataset, failed step)."""


def checkout_commit(asdkit_dir: Path) -> str:
    """The full commit hash of the checkout, or '' when it is not a git checkout."""
    try:
        out = subprocess.run(["git", "-C", str(asdkit_dir), "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True)
    except (OSError, subprocess.CalledProcessError):
        return ""
    return out.stdout.strip()


def patched_copy(asdkit_dir: Path, dest: Path) -> Path:
    """Copy the checkout's code and configs to ``dest`` and apply ``asdkit.patch`` there.

    The user's checkout is never modified. An existing ``dest`` is replaced.

    Raises:
        ParityError: not an ASDKit checkout at ed27d82, or the patch does not apply.
    """
    asdkit_dir = Path(asdkit_dir).resolve()
    if not (asdkit_dir / "asdkit" / "bin" / "train.py").is_file():
        raise ParityError(f"--asdkit {asdkit_dir}: no asdkit/bin/train.py there; clone "
                          "https://github.com/TakuyaFujimura/dcase-asd-toolkit and check out ed27d82")
    commit = checkout_commit(asdkit_dir)
    if commit and not commit.startswith(ASDKIT_COMMIT):
        raise ParityError(f"--asdkit {asdkit_dir} is at commit {commit[:7]}, the harness needs {ASDKIT_COMMIT}: "
                          f"run `git -C {asdkit_dir} checkout {ASDKIT_COMMIT}`")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for sub in ("asdkit", "config"):
        shutil.copytree(asdkit_dir / sub, dest / sub, ignore=shutil.ignore_patterns("__pycache__"))
    res = subprocess.run(["patch", "-p1", "--forward", "--batch", "-i", str(PATCH)], cwd=dest,
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise ParityError(f"{PATCH} does not apply to {asdkit_dir} (is it ASDKit {ASDKIT_COMMIT}?):\n"
                          f"{res.stdout}{res.stderr}")
    return dest


def read_eval_list(path: Path) -> dict[tuple[str, str], str]:
    """``eval_data_list`` (a machine line, then ``anonymised,true name`` rows) -> {(machine, anon): true}."""
    out, machine = {}, None
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.split(",") if c.strip()]
        if len(cells) == 1:
            machine = cells[0]
        elif len(cells) >= 2:
            if machine is None:
                raise ParityError(f"{path}: row {line!r} comes before any machine line")
            out[(machine, cells[0])] = cells[1]
    return out


def formatted_layout(index: pd.DataFrame, data_root: Path, eval_list: dict[tuple[str, str], str],
                     dest: Path) -> pd.DataFrame:
    """Symlink every train/test clip of ``index`` into ASDKit's formatted layout under ``dest``.

    ``index`` is asd's ``index.csv`` (``path`` relative to ``data_root``). Returns one row per clip
    with the asd identity (``split, machine, file, phase``) and ``asdkit_path``, the relative key
    ASDKit's label files and score tables use (``dcase2023/raw/<machine>/<phase>/<name>``).

    Raises:
        ParityError: an eval test clip missing from the list, or two clips of a machine and phase
            that would get the same ASDKit name.
    """
    rows = []
    raw = dest / "formatted" / DCASE / "raw"
    if raw.exists():
        shutil.rmtree(raw)
    for r in index[index["phase"].isin(["train", "test"])].itertuples(index=False):
        name = r.file
        if r.split == "eval" and r.phase == "test":
            if (r.machine, r.file) not in eval_list:
                raise ParityError(f"eval test clip {r.machine}/{r.file} is not in the ground-truth list")
            name = eval_list[(r.machine, r.file)]
        link = raw / r.machine / r.phase / name
        if link.is_symlink() or link.exists():
            raise ParityError(f"two clips map to the ASDKit name {link}; machine names must be unique across "
                              "dev and eval, and eval names unique per machine")
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink((data_root / r.path).resolve(), link)
        rows.append(dict(split=r.split, machine=r.machine, file=r.file, phase=r.phase,
                         asdkit_path=f"{DCASE}/raw/{r.machine}/{r.phase}/{name}"))
    return pd.DataFrame(rows)
