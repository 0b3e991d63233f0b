"""One search trial: sample a config, get its frontend's embeddings (cache or training), score, report.

Pruning: a trained frontend reports the objective after every epoch (computed on the dev machines
when the objective is a dev metric, so the eval machines are not extracted before the last epoch);
a training-free frontend, or one found in the cache, reports once, at step ``train.epochs``.
``trial.should_prune()`` then raises :class:`optuna.TrialPruned` out of the training loop.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from asd import search_cache
from asd import search_tracking as st
from asd.config import Config, _split_kv, load_recipe
from asd.search_space import Space, sample

log = logging.getLogger(__name__)


class TrialRunner:
    """The Optuna objective (``runner(trial) -> float``) of one worker."""

    def __init__(self, settings, space: Space, objective: str, parent: str, study_name: str):
        self.s, self.space, self.objective, self.parent, self.study_name = settings, space, objective, parent, study_name
        self.exp_id = st.experiment_id(settings.experiment)
        self.cache_root = search_cache.cache_dir(settings.data_dir, settings.dataset)
        self._index: dict = {}

    def config(self, trial) -> tuple[Config, dict]:
        sampled, switches = sample(trial, self.space)
        recipe = sampled.pop("recipe", self.space.recipe)
        overrides = {"data.dataset": self.s.dataset, **self.space.fixed, **sampled,
                     **dict(_split_kv(x) for x in self.s.sets)}
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
        rid = st.start_trial(self.exp_id, self.parent, self.study_name, trial.number, params)
        trial.set_user_attr(st.RUN_ATTR, rid)
        state = "FAIL"
        try:
            value, metrics = self._run(trial, cfg, rid)
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
            st.log_metrics(rid, {"trial/seconds": seconds})
            st.end_trial(rid, state)
            print(f"trial {trial.number}: {state.lower()} in {seconds:.1f} s", flush=True)

    def _run(self, trial, cfg: Config, rid: str) -> tuple[float, dict]:
        import optuna

        from asd.data.index import index_path
        from asd.train import family_of

        index = self.index(cfg)
        key = search_cache.frontend_key(cfg, index_path(self.s.data_dir, cfg.data.dataset))
        emb = search_cache.load(self.cache_root, key) if self.s.cache else None
        st.client().set_tag(rid, "asd.frontend_key", key)
        st.client().set_tag(rid, "asd.cache", "off" if not self.s.cache else ("hit" if emb is not None else "miss"))
        if emb is None and family_of(cfg.model.name) != "none":
            emb = self._train(trial, cfg, index, rid, key)  # reports per epoch; may raise TrialPruned
            reported = True
        else:
            if emb is None:
                from asd.extract import extract

                emb = extract(cfg, index, None)
                self._store(key, emb)
            reported = False
        metrics = self._score(emb, cfg)
        step = cfg.train.epochs
        st.log_metrics(rid, metrics, step=step)
        for k in ("official", "dev/official", "eval/official"):
            if k in metrics:
                trial.set_user_attr(k, metrics[k])
        if self.objective not in metrics:
            raise ValueError(f"objective {self.objective!r} is not among the logged metrics "
                             f"({', '.join(sorted(metrics)[:20])}, ...); pick one with --objective")
        value = metrics[self.objective]
        if not reported:
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step}")
        return value, metrics

    def _store(self, key: str, emb) -> None:
        if self.s.cache:
            search_cache.save(self.cache_root, key, emb)

    def _score(self, emb, cfg: Config) -> dict:
        from asd.evaluate import evaluate_embeddings

        return evaluate_embeddings(emb, cfg.backend, cfg.data.dataset).metrics

    def _train(self, trial, cfg: Config, index, rid: str, key: str):
        """Train the frontend; after each epoch score the objective for the pruner; return full embeddings."""
        import optuna

        from asd.extract import extract
        from asd.train import load_checkpoint, train

        if cfg.train.epochs < 1:
            raise ValueError(f"model {cfg.model.name!r} needs train.epochs >= 1 (got {cfg.train.epochs})")
        dev_only = self.objective.startswith("dev/")
        partial = index[index["split"] == "dev"] if dev_only else index
        if partial.empty:  # no dev machine selected: the per-epoch report needs every machine
            partial = index
        final = {}
        with tempfile.TemporaryDirectory(prefix="asd-trial-") as tmp:
            def on_epoch(epoch: int, stats: dict[str, float]) -> None:
                ckpt = load_checkpoint(Path(tmp) / "last.pt")
                last = epoch >= cfg.train.epochs
                emb = extract(cfg, index if last else partial, ckpt)  # the last epoch's is the result
                if last:
                    final["emb"] = emb
                    self._store(key, emb)
                value = self._score(emb, cfg).get(self.objective)
                st.log_metrics(rid, {**stats, **({self.objective: value} if value is not None else {})}, step=epoch)
                if value is not None:
                    trial.report(value, epoch)
                    if trial.should_prune():
                        raise optuna.TrialPruned(f"pruned after epoch {epoch}")

            train(cfg, index, tmp, on_epoch=on_epoch)
        return final["emb"]
