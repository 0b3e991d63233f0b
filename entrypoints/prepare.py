"""MLproject `prepare`: download (or generate), unpack and index a dataset."""

import argparse

import _common
from asd.pipeline import run_prepare

p = argparse.ArgumentParser(description=__doc__)
p.add_argument("--dataset", default="toy")
p.add_argument("--split", default="all", choices=["dev", "eval", "all"])
p.add_argument("--machines", default="")
p.add_argument("--mirror", default="")
p.add_argument("--archives", default="")
p.add_argument("--data-dir", default="data")
p.add_argument("--toy", default="", help="toy set size, e.g. seconds=2,n_test=20")
a = p.parse_args()
run_id = run_prepare(a.dataset, a.data_dir, split=a.split, machines=_common.csv(a.machines) or None,
                     mirror=a.mirror or None, archives=a.archives or None, toy_spec=a.toy or None)
print(f"run_id: {run_id}")
