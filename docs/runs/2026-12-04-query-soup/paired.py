"""Paired differences between two bench_heldout.py runs on the same questions, row by row.

    python docs/runs/2026-12-04-query-soup/paired.py runs/heldout-s22/shipped.json \
        runs/heldout-s22/soup-3-f16.json

For each row name both runs have: F1 and cover-EM of each, and the mean per-question
difference (second minus first) with a 95% interval, and how many answers are identical.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.bench_heldout import heldout  # noqa: E402
from training.evaluate import answer_scores  # noqa: E402


def rows(path: Path) -> tuple[dict, dict[str, dict]]:
    run = json.loads(path.read_text())
    return run, {r["setting"] + " / " + r["name"]: r for r in run["rows"]}


def main() -> None:
    (a_run, a), (b_run, b) = rows(Path(sys.argv[1])), rows(Path(sys.argv[2]))
    if a_run["questions"] != b_run["questions"]:
        raise SystemExit("the two runs asked different questions")
    recs, _ = heldout(a_run["questions"])
    golds = [r.answers for r in recs]
    print(
        f"| row | {a_run['tag']} F1 | {b_run['tag']} F1 | paired F1 | "
        f"{a_run['tag']} cover-EM | {b_run['tag']} cover-EM | paired cover-EM | same answers |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in [n for n in a if n in b]:
        pa, pb = a[name].get("predictions"), b[name].get("predictions")
        if not pa or not pb:
            continue
        cells = [name]
        sa = [answer_scores(p, g) for p, g in zip(pa, golds)]  # each answer scored once
        sb = [answer_scores(p, g) for p, g in zip(pb, golds)]
        for key in ("f1", "acc"):
            x, y = np.array([s[key] for s in sa]), np.array([s[key] for s in sb])
            d = y - x
            half = 1.96 * d.std(ddof=1) / math.sqrt(len(d))
            cells += [
                f"{100 * x.mean():.1f}",
                f"{100 * y.mean():.1f}",
                f"{100 * d.mean():+.1f} ± {100 * half:.1f}",
            ]
        same = sum(x == y for x, y in zip(pa, pb))
        print("| " + " | ".join(cells) + f" | {same} of {len(pa)} |")


if __name__ == "__main__":
    main()
