"""MLproject `train`: train one recipe."""

import argparse

import _common
from asd.config import load_recipe
from asd.pipeline import run_train

p = argparse.ArgumentParser(description=__doc__)
p.add_argument("--dataset", default="toy")
p.add_argument("--recipe", default="ae")
p.add_argument("--machines", default="")
p.add_argument("--set", default="", help="space-separated key=value overrides")
p.add_argument("--device", default="auto")
p.add_argument("--seed", type=float, default=0)
p.add_argument("--data-dir", default="data")
a = p.parse_args()
sets = [f"data.dataset={a.dataset}", f"train.device={a.device}", f"train.seed={int(a.seed)}", *_common.sets(a.set)]
if a.machines:
    sets.append(f"data.machines={a.machines}")
print(f"run_id: {run_train(load_recipe(a.recipe, sets), a.data_dir)}")
