"""MLproject `evaluate`: score a train run's test clips with one or more backends (one run each)."""

import argparse

import _common
from asd.pipeline import run_evaluate

p = argparse.ArgumentParser(description=__doc__)
p.add_argument("--run-id", required=True)
p.add_argument("--backends", default="")
p.add_argument("--data-dir", default="data")
a = p.parse_args()
for run_id in run_evaluate(a.data_dir, run_id=a.run_id, backends=_common.csv(a.backends) or None):
    print(f"run_id: {run_id}")
