"""MLflow side of a search: one parent run per study, one nested run per trial, summaries and plots.

Everything goes through :class:`mlflow.tracking.MlflowClient` with explicit run ids, never the fluent
"active run": a worker's trials, the heartbeat's stale-trial callback and the parent summary each name
the run they write to, so parallel workers (other processes, other machines) cannot cross wires.

Nesting is the ``mlflow.parentRunId`` tag (what ``start_run(nested=True)`` writes); it does not require
the parent to be active, so the parent can be FINISHED by one worker while another is still adding
trials (it is set back to RUNNING when a worker starts).

Tags of a trial run: ``asd.stage=trial``, ``asd.study``, ``asd.trial`` (Optuna number), ``asd.state``
(RUNNING, COMPLETE, PRUNED, FAIL), ``asd.frontend_key`` and ``asd.cache`` (hit, miss, off). A pruned
trial's run is FINISHED with ``asd.state=PRUNED``; only a trial that raised is FAILED.
"""

from __future__ import annotations

import json
import logging

from asd.tracking import client, log_metrics, log_params_once, take_launcher_run

log = logging.getLogger(__name__)
PARENT_ATTR = "mlflow_parent_run_id"
RUN_ATTR = "mlflow_run_id"


def create_parent(exp_id: str, study_name: str, params: dict[str, str], space_yaml: str, tags: dict) -> str:
    """The study's parent run (or the run ``mlflow run`` opened for this entry point)."""
    c = client()
    rid = take_launcher_run() or c.create_run(exp_id, run_name=f"search-{study_name}").info.run_id
    note = f"Optuna study {study_name}: one nested run per trial; best trial and plots here"
    for k, v in {"mlflow.runName": f"search-{study_name}", "asd.stage": "search", "asd.study": study_name,
                 "mlflow.note.content": note, **tags}.items():
        c.set_tag(rid, k, v)
    log_params_once(params, rid)
    c.log_text(rid, space_yaml, "search_space.yaml")
    return rid


def start_trial(exp_id: str, parent: str, study_name: str, number: int, params: dict[str, str]) -> str:
    c = client()
    tags = {"mlflow.parentRunId": parent, "asd.stage": "trial", "asd.study": study_name,
            "asd.trial": str(number), "asd.state": "RUNNING"}
    rid = c.create_run(exp_id, run_name=f"trial-{number:04d}", tags=tags).info.run_id
    log_params_once(params, rid)
    return rid


def end_trial(rid: str, state: str) -> None:
    """``state``: COMPLETE or PRUNED (run FINISHED), FAIL (FAILED) or KILLED."""
    c = client()
    c.set_tag(rid, "asd.state", state)
    status = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED"}.get(state, "KILLED")
    c.set_terminated(rid, status)


class StaleTrialCallback:
    """Heartbeat-stale trial (its worker died): mark its MLflow run FAILED, then let Optuna retry it."""

    def __init__(self, max_retry: int | None = 2):
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        self.retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def __call__(self, study, trial) -> None:
        rid = trial.user_attrs.get(RUN_ATTR)
        if rid:
            try:
                c = client()
                c.set_tag(rid, "asd.state", "FAIL")
                c.set_tag(rid, "asd.fail_reason", "worker stopped sending heartbeats (killed?); retried")
                c.set_terminated(rid, "FAILED")
            except Exception as e:  # noqa: BLE001 - the retry matters more than the bookkeeping
                log.warning("could not mark MLflow run %s of stale trial %d failed: %s", rid, trial.number, e)
        log.warning("trial %d of study %s went stale (its worker died); queued for retry", trial.number,
                    study.study_name)
        self.retry(study, trial)


def summarize(study, parent: str, objective: str, plots: bool = True, finished: bool = False) -> dict:
    """Write the study's best trial, counts and (``plots``) figures to the parent run; return the counts."""
    from optuna.trial import TrialState

    c = client()
    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    log_metrics(parent, {f"search/trials_{k}": v for k, v in counts.items()}, step=len(trials))
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        stale = [k for k in c.get_run(parent).data.tags if k.startswith("best.") and k[5:] not in best.params]
        for k in stale:  # a conditional param the new best does not have
            if k not in ("best.trial", "best.mlflow_run_id"):
                c.delete_tag(parent, k)
        for k, v in best.params.items():
            c.set_tag(parent, f"best.{k}", str(v))
        c.set_tag(parent, "best.trial", str(best.number))
        c.set_tag(parent, "best.mlflow_run_id", best.user_attrs.get(RUN_ATTR, ""))
        log_metrics(parent, {f"best/{objective}": best.value, "best/trial": best.number}, step=len(trials))
        c.log_text(parent, json.dumps({"trial": best.number, "value": best.value, "objective": objective,
                                       "params": best.params}, indent=2, default=str), "best.json")
    if plots and complete:
        _log_plots(study, parent)
    if finished:
        c.set_terminated(parent, "FINISHED")
    return counts


def _log_plots(study, parent: str) -> None:
    """Optimisation history, parallel coordinates and parameter importances (matplotlib, no browser)."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ov

    c = client()
    for name, fn in (("optimization_history", ov.plot_optimization_history),
                     ("parallel_coordinate", ov.plot_parallel_coordinate),
                     ("param_importances", ov.plot_param_importances)):
        try:
            with warnings.catch_warnings():
                # Optuna warns (experimental API, few trials per regime) on every refresh: noise here.
                warnings.simplefilter("ignore")
                ax = fn(study)
            fig = (ax[0] if hasattr(ax, "__len__") else ax).figure
            fig.set_size_inches(10, 6)
            fig.tight_layout()
            c.log_figure(parent, fig, f"plots/{name}.png")
            plt.close(fig)
        except Exception as e:  # noqa: BLE001 - e.g. importances need two complete trials that differ
            log.info("plot %s skipped: %s", name, e)
        finally:
            plt.close("all")
