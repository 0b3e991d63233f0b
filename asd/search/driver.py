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
worker that looks, and re-queued with the same parameters (RetryHeartbeatStaleTrialCallback): at once
when the dead worker ran on the same host (its process is gone), else after ``grace`` seconds without
a heartbeat. Creating, joining, repairing and deleting studies is :mod:`asd.search.study`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

from asd import tracking
from asd.config import ConfigError
from asd.config.overrides import split_kv
from asd.config.recipes import load_recipe
from asd.errors import AsdError
from asd.search import runs as st
from asd.search.study import await_parent, load_existing, open_study
from asd.search.workers import fail_dead_trials

log = logging.getLogger(__name__)
DEFAULT_STORAGE = "sqlite:///optuna.db"


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
    reset_settings: bool = False  # replace the study's recorded space, --set and objective with these

    @property
    def name(self) -> str:
        return self.study_name or f"asd-{self.dataset}"


def _sampler(s: SearchSettings, done: int = 0):
    """The sampler; with ``--seed`` seeded from it and the number of trials the study holds already, so
    that a resumed worker does not draw the parameters of its earlier life again."""
    import optuna

    seed = None if s.seed is None else (s.seed * 1_000_003 + done) % 2**32
    if s.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    raise ConfigError(f"unknown sampler {s.sampler!r}; available: tpe, random")


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
    study, space, objective, parent = open_study(s, _sampler(s))
    study.sampler = _sampler(s, len(study.trials))
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
            fail_dead_trials(study)  # a dead local worker's trial -> FAIL + a WAITING retry, at once
            optuna.storages.fail_stale_trials(study)  # the same after --grace s without heartbeat (any host)
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
    import yaml

    from asd.search.space import parse_space

    study = load_existing(s)
    await_parent(study, s, 0, repair=False)
    a = study.user_attrs
    space = parse_space(yaml.safe_load(a["asd.space"]) or {}, a["asd.space"], f"study {s.name}", set())
    objective = a["asd.objective"]
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
