"""Who runs a trial: a process identity another process on the same host can check, and the retry of
trials whose worker died.

Each trial records its worker (``asd.worker``: host, pid namespace, pid and process start time). A
trial whose worker is a dead process on this host is failed and queued for retry at once, without
waiting for ``--grace`` seconds of missing heartbeats, which remains the rule for workers on other
hosts (a pid means nothing there).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import socket
from pathlib import Path

log = logging.getLogger(__name__)
WORKER_ATTR = "asd.worker"


def _host() -> str:
    """This host and pid namespace: two processes with the same value can see each other's pids."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        ns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        boot, ns = "", 0
    return f"{socket.gethostname()}|{boot}|{ns}"


def me() -> str:
    """This process, as recorded in ``asd.creator`` / ``asd.worker``."""
    import psutil

    return json.dumps({"host": _host(), "pid": os.getpid(), "started": psutil.Process().create_time()})


def dead(who: str | None) -> bool:
    """True when ``who`` (see :func:`me`) is a process of this host that no longer runs."""
    import psutil

    try:
        w = json.loads(who or "")
        if w["host"] != _host():
            return False  # another host: only heartbeats can tell
        return abs(psutil.Process(int(w["pid"])).create_time() - float(w["started"])) > 1.0  # pid reused
    except psutil.NoSuchProcess:
        return True
    except (ValueError, KeyError, TypeError, psutil.Error):
        return False


def fail_dead_trials(study) -> int:
    """Fail (and queue for retry, as a stale heartbeat would) the running trials of dead local workers."""
    import optuna
    from optuna.trial import TrialState

    storage, failed = study._storage, 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not dead(t.user_attrs.get(WORKER_ATTR)):
            continue
        try:
            if not storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        log.warning("trial %d: its worker (%s) is dead; retrying it now", t.number, t.user_attrs[WORKER_ATTR])
        callback = storage.get_heartbeat_stale_trial_callback()
        if callback is not None:
            callback(study, copy.deepcopy(storage.get_trial(t._trial_id)))
        failed += 1
    return failed
