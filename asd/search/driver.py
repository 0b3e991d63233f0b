"""The Optuna driver of ``asd search``: one study, many workers, every trial an MLflow run.

A worker (one ``asd search`` process) creates or joins the study in ``storage`` (SQLite by default;
any Optuna RDB URL, e.g. PostgreSQL, lets workers on several machines share it) and runs trials
until the study holds ``n_trials`` finished (complete or pruned) trials. ``n_trials`` is therefore a
property of the study: re-running the same command resumes a crashed search, running it on ten
machines spreads the same trials over them (the last trials may overshoot by up to one per worker).

Each trial samples ``--set``-style overrides from the search space (asd.search.space), trains the
frontend, reports the objective on the dev machines after every epoch (for the pruner) and logs the
final metrics of every machine, dev and eval; only ``objective`` steers the search. Frontends are
kept by config in the embedding store (asd.search.embeddings), so trials that differ only in the backend skip training.

Workers send Optuna heartbeats; a trial whose worker died (e.g. SIGKILL) is marked FAIL by the next
worker that looks, and re-queued with the same parameters (RetryHeartbeatStaleTrialCallback).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from asd import tracking
from asd.config import ConfigError
from asd.config.overrides import split_kv
from asd.config.recipes import load_recipe
from asd.errors import AsdError
from asd.search import runs as st
from asd.search.space import Space, check_recipes, load_space, parse_space

log = logging.getLogger(__name__)
DEFAULT_STORAGE = "sqlite:///optuna.db"
ALIASES = {"dev_official": "dev/official", "eval_official": "eval/official"}
PRUNERS = {"median": "MedianPruner", "hyperband": "HyperbandPruner", "threshold": "ThresholdPruner",
           "percentile": "PercentilePruner", "none": "NopPruner"}
# --set keys that may differ between workers of one study (each machine picks its own device).
WORKER_LOCAL = ("train.device", "train.num_threads")


@dataclass
class SearchSettings:
    dataset: str = "toy"
    n_trials: int = 20
    data_dir: str = "data"
    storage: str = DEFAULT_STORAGE
    study_name: str | None = None  # default: asd-<dataset>
    objective: str | None = None  # default: dev_official (a new study) or the study's
    direction: str = "maximize"
    sets: list[str] = field(default_factory=list)
    space: str | None = None  # YAML file; default: asd/search/space.yaml (a new study) or the study's
    pruner: str = "median"  # median | hyperband | none | NAME:key=value,... (see make_pruner)
    sampler: str = "tpe"  # tpe | random
    seed: int | None = None  # sampler seed
    heartbeat: int = 30  # seconds between a running trial's heartbeats
    grace: int = 120  # seconds without a heartbeat after which a running trial is stale
    cache: bool = True
    experiment: str | None = None

    @property
    def name(self) -> str:
        return self.study_name or f"asd-{self.dataset}"


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
    return getattr(optuna.pruners, PRUNERS[name])(**kwargs)


def make_storage(url: str, heartbeat: int = 30, grace: int = 120):
    """An Optuna RDB storage with heartbeats: a trial silent for ``grace`` seconds is failed and retried."""
    import warnings

    import optuna

    # Heartbeats and the retry callback are "experimental" in Optuna 5 but are its supported way.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

    import sqlalchemy.exc

    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat, grace_period=grace,
                                              heartbeat_stale_trial_callback=st.StaleTrialCallback())
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.OperationalError):
            # Workers started together on an empty database race to create Optuna's tables; the loser
            # retries and finds them made. A persistent error (bad URL, no server) still surfaces.
            if attempt == 4:
                raise
            time.sleep(1.0 + attempt)


def _sampler(s: SearchSettings):
    import optuna

    if s.sampler == "random":
        return optuna.samplers.RandomSampler(seed=s.seed)
    if s.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=s.seed)
    raise ConfigError(f"unknown sampler {s.sampler!r}; available: tpe, random")


def open_study(s: SearchSettings):
    """Create or join the study; returns ``(study, space, objective metric, parent run id)``.

    The creator (the one worker whose ``create_study`` succeeds; the storage makes that unique)
    records the space, overrides and objective in the study and creates the MLflow parent run before
    any trial; joining workers wait for the parent and use the recorded settings.
    """
    import optuna

    storage = make_storage(s.storage, s.heartbeat, s.grace)
    fixed_keys = {split_kv(x)[0] for x in s.sets}
    kw = dict(study_name=s.name, storage=storage, sampler=_sampler(s), pruner=make_pruner(s.pruner))
    space = None
    if s.name not in optuna.study.get_all_study_names(storage):
        space = load_space(s.space, fixed_keys)  # a bad space must fail before the study exists
        check_recipes(space, dict(split_kv(x) for x in s.sets), s.space or "the default search space")
    try:
        if space is None:
            raise optuna.exceptions.DuplicatedStudyError(s.name)
        study = optuna.create_study(direction=s.direction, **kw)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(**kw)
        return (study, *_join(study, s, fixed_keys))
    try:
        return _create(study, s, space)
    except BaseException:
        optuna.delete_study(study_name=s.name, storage=storage)  # half-made: let the next try start afresh
        raise


def _create(study, s: SearchSettings, space: Space):
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


def _join(study, s: SearchSettings, fixed_keys: set[str], wait: float = 120.0):
    import yaml

    t0 = time.time()
    while st.PARENT_ATTR not in study.user_attrs:
        if time.time() - t0 > wait:
            raise AsdError(f"study {s.name!r} exists but its creator never recorded an MLflow parent run "
                               f"(crashed during setup?); delete the study or use another --study-name")
        time.sleep(0.5)
    a = study.user_attrs
    stored_sets = json.loads(a["asd.sets"])
    is_local = lambda x: split_kv(x)[0] in WORKER_LOCAL  # noqa: E731
    shared = sorted(x for x in s.sets if not is_local(x))
    if shared and shared != sorted(x for x in stored_sets if not is_local(x)):
        raise ConfigError(f"study {s.name!r} was created with --set {' '.join(stored_sets) or '(none)'}, not "
                          f"{' '.join(s.sets)}; omit --set to reuse the study's, or use another --study-name")
    mine = [x for x in s.sets if is_local(x)]  # this machine's device wins over the creator's
    mine_keys = {split_kv(x)[0] for x in mine}
    sets = [x for x in stored_sets if split_kv(x)[0] not in mine_keys] + mine
    if s.space and Path(s.space).read_text() != a["asd.space"]:
        raise ConfigError(f"study {s.name!r} was created with another search space than {s.space}; "
                          "omit --space to reuse the study's, or use another --study-name")
    if s.objective and metric_name(s.objective) != a["asd.objective"]:
        raise ConfigError(f"study {s.name!r} optimises {a['asd.objective']}, not {metric_name(s.objective)}")
    if a["asd.dataset"] != s.dataset:
        raise ConfigError(f"study {s.name!r} searches dataset {a['asd.dataset']!r}, not {s.dataset!r}")
    s.sets = sets
    keys = fixed_keys | {split_kv(x)[0] for x in sets}
    space = parse_space(yaml.safe_load(a["asd.space"]) or {}, a["asd.space"], f"study {s.name}", keys)
    return space, a["asd.objective"], a[st.PARENT_ATTR]


def _counts(study) -> tuple[int, int, int]:
    from optuna.trial import TrialState

    states = [t.state for t in study.get_trials(deepcopy=False)]
    done = sum(x in (TrialState.COMPLETE, TrialState.PRUNED) for x in states)
    return done, states.count(TrialState.RUNNING), states.count(TrialState.WAITING)


def run_search(s: SearchSettings) -> str:
    """Run this worker until the study has ``s.n_trials`` finished trials; return the parent run id."""
    import optuna

    from asd.search.trial import TrialRunner

    tracking.setup(s.experiment)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study, space, objective, parent = open_study(s)
    launcher = tracking.take_launcher_run()  # `mlflow run` joining an existing study
    if launcher:
        tracking.client().set_tag(launcher, "asd.stage", "search-worker")
        tracking.client().set_tag(launcher, "asd.search_parent", parent)
    tracking.client().update_run(parent, status="RUNNING")
    runner = TrialRunner(s, space, objective, parent, study.study_name)
    after_trial = lambda study, ft: st.summarize(study, parent, objective, plots=False)  # noqa: E731
    poll = max(1.0, min(s.heartbeat, 10))
    try:
        while True:
            optuna.storages.fail_stale_trials(study)  # a dead worker's trial -> FAIL + a WAITING retry
            done, running, waiting = _counts(study)
            if done >= s.n_trials:
                break
            if done + running >= s.n_trials and not waiting:
                time.sleep(poll)  # the last trials run elsewhere; stay in case their worker dies
                continue
            study.optimize(runner, n_trials=1, callbacks=[after_trial])
    finally:
        done, running, _ = _counts(study)
        st.summarize(study, parent, objective, plots=True, finished=done >= s.n_trials and not running)
    return parent


def best_trial(s: SearchSettings):
    """``(study, best trial, space, objective, recipe, overrides)``: the overrides that made the best trial's config.

    ``load_recipe(recipe, {**overrides, "data.dataset": dataset})`` is that trial's config (its seed included).
    """
    import optuna

    study = optuna.load_study(study_name=s.name, storage=s.storage)
    a = study.user_attrs
    space, objective, _ = _join(study, SearchSettings(dataset=a["asd.dataset"], study_name=s.name), set(), 0)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise AsdError(f"study {s.name!r} has no complete trial yet ({len(study.trials)} trials)")
    best = study.best_trial
    overrides = {**space.fixed, **dict(split_kv(x) for x in json.loads(a["asd.sets"]))}
    overrides.update({k: v for k, v in best.params.items() if "." in k})
    for p in space.params:  # inactive params with an `otherwise` value were set too
        if p.has_otherwise and p.name not in best.params and not p.is_switch:
            overrides[p.name] = p.otherwise
    return study, best, space, objective, best.params.get("recipe", space.recipe), overrides


def best_report(s: SearchSettings) -> str:
    """The best trial of a study and the commands that retrain it with several seeds."""
    import shlex

    study, best, space, objective, recipe, overrides = best_trial(s)
    a = study.user_attrs
    keys = {p.name for p in space.params}
    seed_free = {k: v for k, v in overrides.items() if k not in ("data.dataset", "train.seed")}
    sets = " ".join(f"--set {shlex.quote(f'{k}={v}')}" for k, v in seed_free.items())
    data_dir = f" --data-dir {shlex.quote(a['asd.data_dir'])}"
    cfg = load_recipe(recipe, {**seed_free, "data.dataset": a["asd.dataset"]})
    backend_sets = " ".join(f"--set {shlex.quote(f'backend.{k}={v}')}" for k, v in vars(cfg.backend).items()
                            if f"backend.{k}" in seed_free and k != "name")
    lines = [f"study {s.name}: {len(study.trials)} trials "
             + ", ".join(f"{n} {st_.name.lower()}" for st_, n in _state_counts(study).items()),
             f"best trial {best.number}: {objective} = {best.value:.4f}"
             + (f" (eval/official {best.user_attrs['eval/official']:.4f})" if "eval/official" in best.user_attrs else ""),
             "params:", *[f"  {k} = {v}" for k, v in best.params.items() if k in keys],
             f"mlflow run: {best.user_attrs.get(st.RUN_ATTR, '?')}",
             "retrain with several seeds (one train run each):",
             f"  asd train --dataset {a['asd.dataset']} --recipe {recipe} --seeds 0,1,2,3 {sets}{data_dir}",
             "then evaluate each train run with the trial's backend:",
             f"  asd evaluate --run-id <TRAIN_RUN_ID> --backend {cfg.backend.name} {backend_sets}{data_dir}".rstrip()]
    return "\n".join(lines)


def _state_counts(study) -> dict:
    from collections import Counter

    return dict(Counter(t.state for t in study.trials))
