"""Run a command and measure it: wall time, CPU time and peak resident memory of its process tree."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Measured:
    """One finished command.

    ``peak_rss_mb``: the largest sum of RSS over the process and all its descendants seen by
    polling (every ``poll`` seconds, so a peak shorter than that can be missed); ``maxrss_mb``: the
    kernel's peak RSS of the largest single process of the tree (``wait4``), exact but not summed;
    ``cpu_s``: user + system CPU seconds of the tree, which tells the work done when other
    processes share the cores (that inflates ``wall_s``, not ``cpu_s``).
    """

    cmd: list[str]
    rc: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    maxrss_mb: float
    log: str

    def to_dict(self) -> dict:
        return asdict(self)


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def run_measured(cmd: list[str], cwd: str | Path, env: dict[str, str], log_path: Path,
                 poll: float = 0.2) -> Measured:
    """Run ``cmd`` with stdout and stderr to ``log_path``; poll the RSS of its process tree.

    The child is reaped with ``os.wait4``, whose resource usage covers the child and the
    descendants it waited for, so several measured commands may run at once from threads.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    peak = 0
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=str(cwd), env=env, stdout=log, stderr=subprocess.STDOUT)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            peak = max(peak, _tree_rss(proc.pid))
            time.sleep(poll)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: keep Popen from waiting again
    wall = time.perf_counter() - t0
    return Measured(list(cmd), proc.returncode, wall, usage.ru_utime + usage.ru_stime, peak / 2**20,
                    usage.ru_maxrss / 1024, str(log_path))


def thread_env(threads: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The current environment with every BLAS/OpenMP pool limited to ``threads``."""
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        env[key] = str(threads)
    env.update(extra or {})
    return env


def tail(path: str | Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log, for error messages."""
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
