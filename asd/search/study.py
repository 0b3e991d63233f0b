"""An ``asd search`` study's life: its storage, creation, joining, repair, reset and deletion.

The creator (the one worker whose ``create_study`` succeeds; the storage makes that unique) records
who it is (``asd.creator``, :func:`asd.search.workers.me`), then the space, overrides and objective,
and last the MLflow parent run. A worker that finds a study without a parent run waits for its
creator; if the creator is dead (on this host: its process is gone; anywhere: it never recorded
itself), the half-made study holds no trial and is deleted and made again.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from pathlib import Path

from asd import tracking
from asd.config import ConfigError
from asd.config.overrides import split_kv
from asd.errors import AsdError
from asd.search import runs as st
from asd.search.space import Space, check_recipes, load_space, parse_space
from asd.search.workers import dead, me

log = logging.getLogger(__name__)
ALIASES = {"dev_official": "dev/official", "eval_official": "eval/official"}
PRUNERS = {"median": "MedianPruner", "hyperband": "HyperbandPruner", "threshold": "ThresholdPruner",
           "percentile": "PercentilePruner", "none": "NopPruner"}
# --set keys that may differ between workers of one study (each machine picks its own device).
WORKER_LOCAL = ("train.device", "train.num_threads")
CREATOR_ATTR = "asd.creator"
SETUP_SECONDS = 20.0  # a creator that has not recorded itself by then died during create_study


def metric_name(objective: str) -> str:
    """``dev_official`` -> ``dev/official``; any other name is an MLflow metric name as logged."""
    return ALIASES.get(objective, objective)


def make_pruner(spec: str):
    """``median`` (default), ``hyperband``, ``none`` or ``NAME:key=value,...``, e.g. ``threshold:lower=0.9``."""
    import optuna
    import yaml

    name, _, args = spec.partition(":")
    if name not in PRUNERS:
        raise ConfigError(f"unknown pruner {name!r}; available: {', '.join(PRUNERS)} (e.g. median:n_startup_trials=3)")
    kwargs = {k: yaml.safe_load(v) for k, v in (split_kv(a) for a in args.split(",") if a.strip())}
    cls = getattr(optuna.pruners, PRUNERS[name])
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        known = [p for p in inspect.signature(cls).parameters if p != "self"]
        raise ConfigError(f"--pruner {spec!r}: {e}; {name} takes {', '.join(known) or 'no arguments'}") from None


def _shown(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not even a URL: show it as given
        return url


def make_storage(url: str, heartbeat: int = 30, grace: int = 120):
    """An Optuna RDB storage with heartbeats: a trial silent for ``grace`` seconds is failed and retried.

    Raises:
        ConfigError: ``url`` is not a database URL, or the database cannot be reached.
    """
    import warnings

    import optuna
    import sqlalchemy.exc

    # Heartbeats and the retry callback are "experimental" in Optuna 5 but are its supported way.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat, grace_period=grace,
                                              heartbeat_stale_trial_callback=st.StaleTrialCallback())
        except (sqlalchemy.exc.NoSuchModuleError, sqlalchemy.exc.ArgumentError, ValueError, ImportError) as e:
            raise ConfigError(f"--storage {_shown(url)!r} is not a database URL asd can open ({type(e).__name__}: "
                              f"{str(e)[:150]}); e.g. sqlite:///optuna.db or postgresql+psycopg://USER:PW@HOST/DB") from None
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.OperationalError) as e:
            # Workers started together on an empty database race to create Optuna's tables; the loser
            # retries and finds them made. A persistent error (no server, no rights) is the user's to fix.
            if attempt == 4:
                raise ConfigError(f"cannot open --storage {_shown(url)!r}: {str(getattr(e, 'orig', e))[:200]}; check "
                                  "that the database server runs and the URL, user and password are right") from None
            time.sleep(1.0 + attempt)


# ---- creating, joining, repairing, resetting and deleting a study ----------------------------------

class _HalfMade(Exception):
    """A study whose creator died before recording its parent run (it holds no trial)."""


def check_sets(space: Space, s) -> None:
    """Build the config of every recipe the space can pick with ``--set`` applied: a typo, a value out of
    range or a pretrained recipe without its base fails here, before a study exists (and not in every
    trial of it)."""
    check_recipes(space, {"data.dataset": s.dataset, **dict(split_kv(x) for x in s.sets)},
                  s.space or "the default search space")


def open_study(s, sampler):
    """Create, join or repair the study of settings ``s``; returns ``(study, space, objective, parent run id)``."""
    pruner = make_pruner(s.pruner)  # before the storage: a bad --pruner creates no database file
    storage = make_storage(s.storage, s.heartbeat, s.grace)
    for _ in range(3):
        try:
            return _open(s, storage, sampler, pruner)
        except _HalfMade as e:
            log.warning("study %s was left half-made by a worker that died while creating it (%s); making it again",
                        s.name, e)
            _delete_quietly(s.name, storage)
    raise AsdError(f"study {s.name!r} keeps being left half-made; delete it with `{delete_command(s)}` and run again")


def _open(s, storage, sampler, pruner):
    import optuna

    fixed_keys = {split_kv(x)[0] for x in s.sets}
    kw = dict(study_name=s.name, storage=storage, sampler=sampler, pruner=pruner)
    if s.name not in optuna.study.get_all_study_names(storage):
        space = load_space(s.space, fixed_keys)  # a bad space or --set must fail before the study exists
        check_sets(space, s)
        try:
            study = optuna.create_study(direction=s.direction, **kw)
        except optuna.exceptions.DuplicatedStudyError:
            study = None  # another worker created it a moment ago: join it
        if study is not None:
            study.set_user_attr(CREATOR_ATTR, me())  # first: a joining worker can tell whether we are alive
            try:
                return _create(study, s, space)
            except BaseException:
                optuna.delete_study(study_name=s.name, storage=storage)  # half-made: let the next try start afresh
                raise
    study = optuna.load_study(**kw)
    return (study, *_join(study, s, fixed_keys))


def _create(study, s, space: Space):
    from sqlalchemy.engine import make_url

    objective = metric_name(s.objective or "dev_official")
    attrs = {"asd.space": space.source, "asd.sets": json.dumps(s.sets), "asd.objective": objective,
             "asd.dataset": s.dataset, "asd.data_dir": str(s.data_dir)}
    for k, v in attrs.items():
        study.set_user_attr(k, v)
    params = {"search.study": s.name, "search.objective": objective, "search.direction": s.direction,
              "search.pruner": s.pruner, "search.sampler": s.sampler, "search.n_trials": str(s.n_trials),
              "search.storage": make_url(s.storage).render_as_string(hide_password=True),
              "search.recipe": space.recipe or "(searched)", "search.sets": " ".join(s.sets),
              "data.dataset": s.dataset}
    parent = st.create_parent(tracking.experiment_id(s.experiment), s.name, params, space.source,
                              {"asd.dataset": s.dataset})
    study.set_user_attr(st.PARENT_ATTR, parent)  # last: joining workers wait for it
    return study, space, objective, parent


def delete_command(s) -> str:
    return f"asd search --delete --study-name {s.name} --storage {_shown(s.storage)}"


def await_parent(study, s, wait: float, repair: bool = True) -> None:
    """Wait until the creator of ``study`` has recorded its parent run.

    Raises:
        _HalfMade: (``repair``) the creator is dead and the study holds no trial: make it again.
        AsdError: the parent never came, with the command that deletes the study.
    """
    t0 = time.time()
    while st.PARENT_ATTR not in (attrs := study.user_attrs):
        creator = attrs.get(CREATOR_ATTR)
        gone = dead(creator) or (creator is None and time.time() - t0 > min(wait, SETUP_SECONDS))
        if gone and repair and not study.get_trials(deepcopy=False):
            raise _HalfMade(f"creator {creator or 'unrecorded'}")
        if time.time() - t0 >= wait:
            raise AsdError(f"study {s.name!r} exists but its creator ({creator or 'unrecorded'}) never recorded an "
                           f"MLflow parent run (killed during setup?); if no worker is creating it, delete it with "
                           f"`{delete_command(s)}` and run again")
        time.sleep(0.5)


def _join(study, s, fixed_keys: set[str], wait: float = 120.0):
    import yaml

    await_parent(study, s, wait)
    if s.reset_settings:
        reset_settings(study, s, fixed_keys)
    a = study.user_attrs
    stored_sets = json.loads(a["asd.sets"])
    is_local = lambda x: split_kv(x)[0] in WORKER_LOCAL  # noqa: E731
    shared = sorted(x for x in s.sets if not is_local(x))
    hint = f"; or replace the study's settings with --reset-settings, or delete it with `{delete_command(s)}`"
    if shared and shared != sorted(x for x in stored_sets if not is_local(x)):
        raise ConfigError(f"study {s.name!r} was created with --set {' '.join(stored_sets) or '(none)'}, not "
                          f"{' '.join(s.sets)}; omit --set to reuse the study's, or use another --study-name{hint}")
    mine = [x for x in s.sets if is_local(x)]  # this machine's device wins over the creator's
    mine_keys = {split_kv(x)[0] for x in mine}
    sets = [x for x in stored_sets if split_kv(x)[0] not in mine_keys] + mine
    if s.space and Path(s.space).read_text() != a["asd.space"]:
        raise ConfigError(f"study {s.name!r} was created with another search space than {s.space}; "
                          f"omit --space to reuse the study's, or use another --study-name{hint}")
    if s.objective and metric_name(s.objective) != a["asd.objective"]:
        raise ConfigError(f"study {s.name!r} optimises {a['asd.objective']}, not {metric_name(s.objective)}{hint}")
    if a["asd.dataset"] != s.dataset:
        raise ConfigError(f"study {s.name!r} searches dataset {a['asd.dataset']!r}, not {s.dataset!r}")
    s.sets = sets
    keys = fixed_keys | {split_kv(x)[0] for x in sets}
    space = parse_space(yaml.safe_load(a["asd.space"]) or {}, a["asd.space"], f"study {s.name}", keys)
    try:  # a study made before --set was checked (or by another asd version) may hold settings that fail
        check_sets(space, s)
    except ConfigError as e:
        raise ConfigError(f"study {s.name!r} holds settings no trial can run with ({e}); replace them with "
                          f"--reset-settings and the right --set, or delete the study with `{delete_command(s)}`") from None
    return space, a["asd.objective"], a[st.PARENT_ATTR]


def reset_settings(study, s, fixed_keys: set[str]) -> None:
    """``--reset-settings``: replace the study's recorded space, ``--set`` and objective with this command's."""
    a = study.user_attrs
    if a["asd.dataset"] != s.dataset:
        raise ConfigError(f"study {s.name!r} searches dataset {a['asd.dataset']!r}; --reset-settings cannot change "
                          "the dataset: use another --study-name")
    if s.space:
        space = load_space(s.space, fixed_keys)
    else:  # keep the study's space: only what this command gives is replaced
        import yaml

        space = parse_space(yaml.safe_load(a["asd.space"]) or {}, a["asd.space"], f"study {s.name}", fixed_keys)
    check_sets(space, s)
    objective = metric_name(s.objective or a["asd.objective"])
    for k, v in {"asd.space": space.source, "asd.sets": json.dumps(s.sets), "asd.objective": objective}.items():
        study.set_user_attr(k, v)
    c, parent = tracking.client(), a[st.PARENT_ATTR]
    c.log_text(parent, space.source, "search_space.yaml")
    c.set_tag(parent, "asd.settings_reset", f"{time.strftime('%Y-%m-%dT%H:%M:%S')}: --set {' '.join(s.sets)}; "
                                            f"objective {objective}")
    log.warning("study %s: settings replaced (--set %s, objective %s); its %d earlier trial(s) ran with the old ones",
                s.name, " ".join(s.sets) or "(none)", objective, len(study.trials))


def load_existing(s):
    """The study of ``s`` (for ``--best``/``--delete``); a missing one is an error listing the studies there."""
    import optuna

    storage = make_storage(s.storage, s.heartbeat, s.grace)
    names = optuna.study.get_all_study_names(storage)
    if s.name not in names:
        raise AsdError(f"no study {s.name!r} in {_shown(s.storage)} (studies there: {', '.join(names) or 'none'}); "
                       "pass --study-name and --storage of an existing study")
    return optuna.load_study(study_name=s.name, storage=storage)


def delete(s) -> str:
    """``asd search --delete``: remove the study from its storage; returns what was deleted."""
    import optuna

    study = load_existing(s)
    n, parent = len(study.trials), study.user_attrs.get(st.PARENT_ATTR)
    optuna.delete_study(study_name=s.name, storage=study._storage)
    return (f"deleted study {s.name} ({n} trial(s)) from {_shown(s.storage)}; its MLflow runs are kept"
            + (f" (parent run {parent})" if parent else ""))


def _delete_quietly(name: str, storage) -> None:
    import optuna

    try:
        optuna.delete_study(study_name=name, storage=storage)
    except KeyError:
        pass  # another worker repaired it first
