"""The ``asd`` command line: parse, then call :mod:`asd.pipeline`. Heavy imports happen inside commands.

Every command that creates MLflow runs prints ``run_id: <ID>`` as its last line of standard output.
The MLproject entry points call these commands directly, so every option also accepts what MLflow
passes for an unset parameter (an empty string) and numbers written as floats (``1.0``).
"""

from __future__ import annotations

import logging
import sys

import click


class _IntLike(click.ParamType):
    """An int that may be written ``3`` or ``3.0`` (MLproject has no integer parameter type)."""

    name = "integer"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            f = float(value)
            if f.is_integer():
                return int(f)
        except (TypeError, ValueError):
            pass
        self.fail(f"{value!r} is not an integer", param, ctx)


INT = _IntLike()
DATA_DIR = click.option("--data-dir", default=None, help="Where datasets live (default: $ASD_DATA_DIR or ./data).")
MACHINES = click.option("--machines", default="", help="Comma-separated machine types (default: all).")
TOY = click.option("--toy", "toy", default=None, metavar="K=V,...",
                   help="Size of the built-in toy set, e.g. seconds=2,n_source_train=50,n_test=20 (remembered).")
SETS = click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                    help="Override a config field, e.g. --set train.epochs=5 (repeatable; one value may hold "
                         "several, space-separated). --set wins over the other options.")
DEVICE = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None, help="Default: auto.")


def _data_dir(value: str | None) -> str:
    from asd.data.index import default_data_dir

    return str(value or default_data_dir())


def _csv(values) -> list[str]:
    """Items of comma-separated text, or of several such texts."""
    values = [values] if isinstance(values, str) or values is None else values
    return [x.strip() for v in values for x in (v or "").split(",") if x.strip()]


def _done(run_ids) -> None:
    for rid in [run_ids] if isinstance(run_ids, str) else list(run_ids):
        click.echo(f"run_id: {rid}")


class _Group(click.Group):
    """A user error (:class:`asd.errors.AsdError`) is one line on stderr and exit status 2; bugs keep their traceback."""

    def invoke(self, ctx):
        from asd.errors import AsdError

        try:
            return super().invoke(ctx)
        except AsdError as e:
            if ctx.obj.get("debug"):
                raise
            click.echo(f"error: {e}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.option("--debug", is_flag=True, help="Show full tracebacks, user errors included.")
@click.option("-v", "--verbose", is_flag=True)
@click.version_option(package_name="asd")
@click.pass_context
def main(ctx, debug: bool, verbose: bool) -> None:
    """asd: anomalous sound detection on DCASE Task 2 data, tracked in MLflow."""
    ctx.obj = {"debug": debug}
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@main.command()
@click.option("--dataset", default="toy", show_default=True, help="toy or dcase2020 ... dcase2026.")
@click.option("--split", type=click.Choice(["dev", "eval", "all"]), default="all", show_default=True)
@MACHINES
@DATA_DIR
@click.option("--mirror", default=None, help="Fetch every file as URL/<file name> instead of its official location.")
@click.option("--archives", default=None, help="Use archives already in DIR.")
@click.option("--check", is_flag=True, help="Only check an existing index: files, audio (decoded again), counts.")
@click.option("--strict", is_flag=True, help="Count mismatches are errors, not warnings.")
@click.option("--skip-bad", is_flag=True, help="Index the good clips when some are bad (listed in bad_clips.csv).")
@click.option("--no-wait", is_flag=True, help="Fail at once if another prepare holds the data folder.")
@click.option("--max-clip-seconds", type=float, default=None, help="Raise the year's longest accepted clip.")
@click.option("--max-archive-gb", type=float, default=None, help="Raise the year's largest accepted unpacked archive.")
@TOY
def prepare(dataset, split, machines, data_dir, mirror, archives, check, strict, skip_bad, no_wait, max_clip_seconds,
            max_archive_gb, toy) -> None:
    """Download (or generate), unpack, verify and index a dataset."""
    from asd.data.archives import Limits

    data_dir, limits = _data_dir(data_dir), Limits(max_clip_seconds or None, max_archive_gb or None)
    if check:
        from asd.data.index import read_index
        from asd.data.prepare import check

        for line in check(dataset, data_dir, strict=strict, wait=not no_wait, limits=limits):
            click.echo(f"warning: {line}", err=True)
        df = read_index(data_dir, dataset)
        click.echo(f"{dataset}: {len(df)} clips, {df['machine'].nunique()} machines: index OK (files and audio verified)")
        return
    from asd.pipeline import run_prepare

    _done(run_prepare(dataset, data_dir, split=split, machines=_csv(machines), mirror=mirror or None,
                      archives=archives or None, strict=strict, toy_spec=toy or None, skip_bad=skip_bad,
                      wait=not no_wait, limits=limits))


@main.command()
@click.option("--dataset", default="toy", show_default=True)
@click.option("--recipe", default="ae", show_default=True, help="A named recipe (see `asd recipes`).")
@MACHINES
@SETS
@DEVICE
@click.option("--seed", type=INT, default=None, help="Random seed (default: the recipe's, 0).")
@click.option("--seeds", default="", help="Several seeds, e.g. 0,1,2,3: one train run each.")
@click.option("--resume", "resume", default=None, metavar="RUN_ID", help="Continue an interrupted train run.")
@DATA_DIR
def train(dataset, recipe, machines, sets, device, seed, seeds, resume, data_dir) -> None:
    """Train a recipe (a run that records the config, and weights where the method has any)."""
    from asd.config.overrides import cli_overrides
    from asd.config.recipes import load_recipe
    from asd.pipeline import run_train

    data_dir = _data_dir(data_dir)
    if resume:
        _done(run_train(None, data_dir, resume_run=resume))
        return
    configs = [load_recipe(recipe, cli_overrides(dataset, machines, device, s, sets))
               for s in [int(float(x)) for x in _csv(seeds)] or [seed]]  # every seed checked before training
    _done([run_train(cfg, data_dir) for cfg in configs])


@main.command()
@click.option("--run-id", default=None, help="A train run to evaluate.")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None, help="Or a checkpoint file.")
@click.option("--backend", "backends", multiple=True,
              help="Backend(s), repeatable or comma-separated; one evaluate run each (default: the recipe's).")
@SETS
@click.option("--no-umap", is_flag=True, help="Skip the UMAP figures.")
@click.option("--log-model", is_flag=True, help="Also log the fitted detector as an MLflow model (for `asd register`).")
@DATA_DIR
def evaluate(run_id, checkpoint, backends, sets, no_umap, log_model, data_dir) -> None:
    """Score every test clip of a trained method and log the metrics."""
    from asd.config.overrides import parse_sets
    from asd.pipeline import run_evaluate

    _done(run_evaluate(_data_dir(data_dir), run_id=run_id or None, checkpoint=checkpoint or None,
                       backends=_csv(backends) or None, overrides=parse_sets(sets), umap=not no_umap,
                       log_model=log_model))


def _registered(version: str, uri: str) -> None:
    click.echo(f"version: {version}")
    click.echo(f"model_uri: {uri}")


def _quiet_downloads() -> None:
    """No MLflow progress bars for the small artifacts these commands read (set the variable to see them)."""
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@main.command()
@click.option("--run-id", required=True, help="An evaluate run (the last line of `asd evaluate`).")
@click.option("--name", required=True, help="Registered model name (created if new).")
@click.option("--alias", default=None, help="Point this alias (e.g. champion) at the version.")
@DATA_DIR
def register(run_id, name, alias, data_dir) -> None:
    """Register an evaluate run's detector (refitted from its train run if it logged none); prints model_uri last."""
    from asd.serving.register import run_register

    _quiet_downloads()
    _registered(*run_register(run_id, name, alias or None, _data_dir(data_dir)))


@main.command()
@click.option("--model", "model_uri", required=True, help="Model URI, e.g. models:/NAME@champion.")
@click.option("--machine", required=True, help="Machine type of every clip.")
@click.option("--section", default=None, help="Section of every clip (needed where the machine has several).")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="CSV file (default: standard output).")
@click.option("--watch", "watch_dir", default=None, type=click.Path(file_okay=False),
              help="Then poll this folder for new WAV files and append their scores; Ctrl-C stops.")
@click.option("--interval", default=2.0, show_default=True, help="Seconds between polls of --watch.")
@click.option("--threads", type=INT, default=1, show_default=True, help="torch CPU threads.")
@click.argument("items", nargs=-1, type=click.Path())
def score(model_uri, machine, section, out, watch_dir, interval, threads, items) -> None:
    """Score WAV files and folders with a registered detector: a CSV of file, machine, score, decision."""
    from asd.serving.batch import run_score

    _quiet_downloads()
    summary = run_score(model_uri, machine, items, out=out, section=section, watch_dir=watch_dir, interval=interval,
                        threads=threads)
    click.echo(summary, err=out is None)


@main.command(name="main")
@click.option("--dataset", default="toy", show_default=True)
@click.option("--recipes", default="ae,raw_spec", show_default=True)
@MACHINES
@SETS
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--seed", type=INT, default=0, show_default=True)
@click.option("--seeds", default="", help="Several seeds, e.g. 0,1,2,3: train and evaluate each recipe once per seed.")
@click.option("--no-umap", is_flag=True)
@TOY
@DATA_DIR
def main_cmd(dataset, recipes, machines, sets, device, seed, seeds, no_umap, toy, data_dir) -> None:
    """The whole pipeline: prepare, then train and evaluate each recipe, under one parent run."""
    from asd.pipeline import run_main

    _done(run_main(dataset, _csv(recipes), _csv(machines) or None, list(sets), _data_dir(data_dir), device, seed,
                   umap=not no_umap, toy_spec=toy or None, seeds=[int(float(s)) for s in _csv(seeds)] or None))


@main.command()
def recipes() -> None:
    """List the named recipes and their settings."""
    from asd.config.recipes import RECIPES

    for name, preset in RECIPES.items():
        click.echo(f"{name}: " + ", ".join(f"{k}={v}" for k, v in preset.items()))


@main.command()
@click.option("--run-id", required=True, help="An evaluate run (the last line of `asd evaluate`).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Folder for the files.")
def export(run_id, out) -> None:
    """Write the official submission files (anomaly scores and decisions) of an evaluate run."""
    from asd.evaluation.export import export_run

    paths = export_run(run_id, out)
    machines = sorted({p.name.split("_")[2] for p in paths if p.name.startswith("anomaly_score_")})
    click.echo(f"wrote {len(paths)} files for {len(machines)} machines ({', '.join(machines)}) to {out}")


@main.command()
@click.option("--experiment", default=None, help="MLflow experiment to read (default: $MLFLOW_EXPERIMENT_NAME or asd).")
@click.option("--out", "out", default="report", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the CSV, Markdown and PNG files.")
@click.option("--filter", "filter_string", default=None,
              help="Extra MLflow filter on the evaluate runs, e.g. \"params.`train.epochs` = '20'\".")
def report(experiment, out, filter_string) -> None:
    """Tables of official scores across evaluate runs (mean ± std over seeds) and a heat map."""
    from asd.evaluation.report import run_report

    table, run_id = run_report(experiment, out, filter_string)
    click.echo(table)
    click.echo(f"files in {out}/ (and in the report run's artifacts)")
    _done(run_id)


@main.command()
@click.option("--dataset", default="toy", show_default=True)
@click.option("--n-trials", type=INT, default=20, show_default=True,
              help="Finished (complete + pruned) trials the study should hold; workers stop there.")
@click.option("--storage", default="sqlite:///optuna.db", show_default=True,
              help="Optuna RDB URL; e.g. postgresql://user:pw@host/db to share one study between machines.")
@click.option("--study-name", default=None, help="Default: asd-<dataset>. An existing study is resumed.")
@click.option("--objective", default=None, help="Metric to maximise (default dev_official; any logged metric).")
@click.option("--direction", type=click.Choice(["maximize", "minimize"]), default="maximize", show_default=True)
@SETS
@click.option("--space", default=None, help="Search space YAML (default: asd/search/space.yaml).")
@click.option("--pruner", default="median", show_default=True,
              help="median | hyperband | none | NAME:key=value,... (e.g. threshold:lower=0.8).")
@click.option("--sampler", type=click.Choice(["tpe", "random"]), default="tpe", show_default=True)
@click.option("--seed", type=INT, default=None, help="Sampler seed (give each parallel worker its own).")
@click.option("--heartbeat", type=INT, default=30, show_default=True, help="Seconds between trial heartbeats.")
@click.option("--grace", type=INT, default=120, show_default=True,
              help="Seconds without heartbeat before a running trial counts as dead and is retried.")
@click.option("--no-cache", is_flag=True, help="Retrain every frontend (no shared embedding store).")
@click.option("--best", is_flag=True, help="Print the best trial and the commands to retrain it; run nothing.")
@click.option("--reset-settings", is_flag=True,
              help="Replace the study's recorded --set, --space and --objective with this command's.")
@click.option("--delete", is_flag=True, help="Delete the study from --storage (its MLflow runs stay); run nothing.")
@click.option("--register", "register_name", default=None, metavar="NAME",
              help="With --best: retrain the best trial (its seed), evaluate it and register its detector as NAME.")
@click.option("--alias", default=None, help="With --register: point this alias (e.g. champion) at the version.")
@DATA_DIR
def search(dataset, n_trials, storage, study_name, objective, direction, sets, space, pruner, sampler, seed,
           heartbeat, grace, no_cache, best, reset_settings, delete, register_name, alias, data_dir) -> None:
    """Optuna search over losses, margins and backends; one MLflow parent run per study."""
    from asd.config.overrides import parse_sets
    from asd.search.driver import SearchSettings, best_report, run_search

    s = SearchSettings(dataset=dataset, n_trials=n_trials, data_dir=_data_dir(data_dir), storage=storage,
                       study_name=study_name or None, objective=objective or None, direction=direction,
                       sets=parse_sets(sets), space=space or None, pruner=pruner, sampler=sampler, seed=seed,
                       heartbeat=heartbeat, grace=grace, cache=not no_cache, reset_settings=reset_settings)
    if register_name and not best:
        raise click.UsageError("--register needs --best")
    if delete:
        from asd.search.study import delete as delete_study

        click.echo(delete_study(s))
        return
    if best:
        click.echo(best_report(s))
        if register_name:
            from asd.serving.register import register_best

            _quiet_downloads()
            train_run, eval_run, version, uri = register_best(s, register_name, alias or None)
            click.echo(f"retrained: train run {train_run}, evaluate run {eval_run}")
            _registered(version, uri)
        return
    _done(run_search(s))


if __name__ == "__main__":
    main()
