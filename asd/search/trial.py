"""One search trial: sample a config, get its frontend's embeddings (store or training), score, report.

Pruning: a trained frontend reports the objective after every epoch (computed on the dev machines
when the objective is a dev metric, so the eval machines are not embedded before the last epoch);
a training-free frontend, or one found in the embedding store, reports once, at step ``train.epochs``.
``trial.should_prune()`` then raises :class:`optuna.TrialPruned` out of the training loop.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from asd import tracking
from asd.config import Config, ConfigError
from asd.config.overrides import split_kv
from asd.config.recipes import load_recipe
from asd.detector import Detector
from asd.search import embeddings as store
from asd.search import runs
from asd.search.space import Space, sample
from asd.search.workers import WORKER_ATTR, me

log = logging.getLogger(__name__)


class TrialRunner:
    """The Optuna objective (``runner(trial) -> float``) of one worker."""

    def __init__(self, settings, space: Space, objective: str, parent: str, study_name: str):
        self.s, self.space, self.objective, self.parent, self.study_name = settings, space, objective, parent, study_name
        self.exp_id = tracking.experiment_id(settings.experiment)
        self.store_root = store.store_dir(settings.data_dir, settings.dataset)
        self._index: dict = {}

    def config(self, trial) -> tuple[Config, dict]:
        sampled, switches = sample(trial, self.space)
        recipe = sampled.pop("recipe", self.space.recipe)
        overrides = {"data.dataset": self.s.dataset, **self.space.fixed, **sampled,
                     **dict(split_kv(x) for x in self.s.sets)}
        return load_recipe(recipe, overrides), switches

    def index(self, cfg: Config):
        from asd.data.index import read_index

        key = tuple(cfg.data.machines)
        if key not in self._index:
            self._index[key] = read_index(self.s.data_dir, cfg.data.dataset, list(key) or None)
        return self._index[key]

    def __call__(self, trial) -> float:
        import optuna

        t0 = time.time()
        cfg, switches = self.config(trial)
        params = {**cfg.flat(), **{f"search.{k}": v for k, v in switches.items()}}
        trial.set_user_attr(WORKER_ATTR, me())  # first: if this process dies, a local worker retries at once
        rid = runs.start_trial(self.exp_id, self.parent, self.study_name, trial.number, params)
        trial.set_user_attr(runs.RUN_ATTR, rid)
        state = "FAIL"
        try:
            value = self._run(trial, cfg, rid)
            state = "COMPLETE"
            return value
        except optuna.TrialPruned:
            state = "PRUNED"
            raise
        except KeyboardInterrupt:
            state = "KILLED"
            raise
        finally:
            seconds = time.time() - t0
            tracking.log_metrics(rid, {"trial/seconds": seconds})
            runs.end_trial(rid, state)
            print(f"trial {trial.number}: {state.lower()} in {seconds:.1f} s", flush=True)

    def _run(self, trial, cfg: Config, rid: str) -> float:
        import optuna

        from asd.training import trains

        index = self.index(cfg)
        key = store.frontend_key(cfg, index)
        emb = store.load(self.store_root, key) if self.s.cache else None
        c = tracking.client()
        c.set_tag(rid, "asd.frontend_key", key)
        c.set_tag(rid, "asd.cache", "off" if not self.s.cache else ("hit" if emb is not None else "miss"))
        reported = emb is None and trains(cfg)
        if reported:
            emb = self._train(trial, cfg, index, rid, key)  # reports per epoch; may raise TrialPruned
        elif emb is None:
            emb = Detector(cfg).embed(index)
            self._store(key, emb)
        result = self._score(emb, cfg)
        metrics = result.metrics
        tracking.log_metrics(rid, metrics, step=cfg.train.epochs)
        for k in ("official", "dev/official", "eval/official"):
            if k in metrics:
                trial.set_user_attr(k, metrics[k])
        if self.objective in result.missing:
            raise ConfigError(f"objective {self.objective!r} cannot be computed on these clips: "
                              f"{result.missing[self.objective]}")
        if self.objective not in metrics:
            raise ConfigError(f"objective {self.objective!r} is not among the logged metrics "
                              f"({', '.join(sorted(metrics)[:20])}, ...); pick one with --objective")
        value = metrics[self.objective]
        if not reported:
            trial.report(value, cfg.train.epochs)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {cfg.train.epochs}")
        return value

    def _store(self, key: str, emb) -> None:
        if self.s.cache:
            store.save(self.store_root, key, emb)

    def _score(self, emb, cfg: Config):
        from asd.evaluation.scoring import evaluate

        return evaluate(Detector(cfg), emb)

    def _train(self, trial, cfg: Config, index, rid: str, key: str):
        """Train the frontend; after each epoch score the objective for the pruner; return full embeddings."""
        import optuna

        from asd.training import train
        from asd.training.runtime import load_checkpoint

        if cfg.train.epochs < 1:
            raise ConfigError(f"model {cfg.model.name!r} needs train.epochs >= 1 (got {cfg.train.epochs})")
        dev_only = self.objective.startswith("dev/")
        partial = index[index["split"] == "dev"] if dev_only else index
        if partial.empty:  # no dev machine selected: the per-epoch report needs every machine
            partial = index
        final = {}
        with tempfile.TemporaryDirectory(prefix="asd-trial-") as tmp:
            def on_epoch(epoch: int, stats: dict[str, float]) -> None:
                last = epoch >= cfg.train.epochs
                emb = Detector(cfg, load_checkpoint(Path(tmp) / "last.pt")).embed(index if last else partial)
                if last:  # the last epoch's embeddings are the trial's result
                    final["emb"] = emb
                    self._store(key, emb)
                value = self._score(emb, cfg).metrics.get(self.objective)
                tracking.log_metrics(rid, {**stats, **({self.objective: value} if value is not None else {})},
                                     step=epoch)
                if value is not None:
                    trial.report(value, epoch)
                    if trial.should_prune():
                        raise optuna.TrialPruned(f"pruned after epoch {epoch}")

            train(cfg, index, tmp, on_epoch=on_epoch)
        return final["emb"]
