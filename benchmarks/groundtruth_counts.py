"""Check official ground-truth files against the count table of asd.data.years (no audio needed).

Usage: python benchmarks/groundtruth_counts.py LISTS_DIR
LISTS_DIR holds eval_data_list_<year>.csv, evaluator2022/ground_truth_domain/*.csv and
ground_truth_attributes/dcase202{4,5}t2/... as in the official repositories. Prints, per year, the
machines read, sections whose eval test counts differ from the table, clips whose attributes stay
hidden, and the 2022 domain corrections.
"""

import sys
from collections import Counter
from pathlib import Path

from asd.data.groundtruth import load_ground_truth
from asd.data.years import YEARS, expected_counts


def main(lists: Path) -> int:
    status = 0
    for y in range(2020, 2026):
        files = {f"eval_data_list_{y}.csv": ("gt_list", "eval", "", lists / f"eval_data_list_{y}.csv")}
        if y == 2022:
            for p in (lists / "evaluator2022/ground_truth_domain").glob("*.csv"):
                files[p.name] = ("gt_domain", "eval", "", p)
        for p in (lists / f"ground_truth_attributes/dcase{y}t2").rglob("*.csv"):
            files[str(p)] = ("gt_attributes", p.parts[-3].split("_")[0], p.parts[-2], p)
        gt = load_ground_truth(y, files)
        year = YEARS[f"dcase{y}"]
        bad, hidden = [], 0
        for m, clips in gt.eval_test.items():
            got = Counter()
            for anon, t in clips.items():
                got[(int(anon.split("_")[1]), t.domain, "test", t.label)] += 1
                hidden += t.hidden
            for s in year.sections("eval", m):
                exp = {k: v for k, v in expected_counts(year, "eval", m, s).items() if k[1] == "test"}
                if exp != {k[1:]: v for k, v in got.items() if k[0] == s}:
                    bad.append(f"{m} section {s:02d}")
        status |= bool(bad)
        print(f"{y}: {len(gt.eval_test)} machines, {sum(map(len, gt.eval_test.values()))} eval test clips; "
              f"count mismatches: {bad or 'none'}; attributes still hidden: {hidden}; {'; '.join(gt.notes)}")
    return status


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/dcase/lists")))
