"""MLproject `search`: one Optuna worker; the run `mlflow run` opens becomes the study's parent run."""

import argparse

import _common
from asd.search import SearchSettings, run_search

p = argparse.ArgumentParser(description=__doc__)
p.add_argument("--dataset", default="toy")
p.add_argument("--n-trials", type=float, default=20)
p.add_argument("--storage", default="sqlite:///optuna.db")
p.add_argument("--study-name", default="")
p.add_argument("--objective", default="")
p.add_argument("--set", default="", help="space-separated key=value overrides fixed for every trial")
p.add_argument("--space", default="")
p.add_argument("--pruner", default="median")
p.add_argument("--data-dir", default="data")
a = p.parse_args()
s = SearchSettings(dataset=a.dataset, n_trials=int(a.n_trials), data_dir=a.data_dir, storage=a.storage,
                   study_name=a.study_name or None, objective=a.objective or None, sets=_common.sets(a.set),
                   space=a.space or None, pruner=a.pruner)
print(f"run_id: {run_search(s)}")
