"""MLproject `main`: prepare -> train -> evaluate for each recipe, nested under the launcher's run."""

import argparse

import _common
from asd.pipeline import run_main

p = argparse.ArgumentParser(description=__doc__)
p.add_argument("--dataset", default="toy")
p.add_argument("--recipes", default="ae,raw_spec")
p.add_argument("--machines", default="")
p.add_argument("--set", default="", help="space-separated key=value overrides")
p.add_argument("--device", default="auto")
p.add_argument("--seed", type=float, default=0)
p.add_argument("--seeds", default="", help="several seeds, e.g. 0,1,2,3 (one train run each)")
p.add_argument("--data-dir", default="data")
p.add_argument("--toy", default="", help="toy set size, e.g. seconds=2,n_test=20")
a = p.parse_args()
run_id = run_main(a.dataset, _common.csv(a.recipes), _common.csv(a.machines) or None, _common.sets(a.set),
                  a.data_dir, a.device, int(a.seed), toy_spec=a.toy or None,
                  seeds=[int(float(x)) for x in _common.csv(a.seeds)] or None)
print(f"run_id: {run_id}")
