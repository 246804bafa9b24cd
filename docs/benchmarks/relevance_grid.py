"""The calibration grid of BENCHMARKS.md "Calibrated relevance" (current model): the
cross-validated ECE of each recipe over the questions that ``latentmem bench fit-relevance
... --samples FILE`` searched and kept. Refits only; nothing is searched again.

    python docs/benchmarks/relevance_grid.py FILE

Recipes: with or without the ``user_role`` feature (the last of ``relevance.FEATURES``),
and the foreign questions' weight capped at 1x / 0.5x / 0.25x / 0.1x of a data set's
answerable ones, or not capped (100x is more than any data set here has).
"""

from __future__ import annotations

import pickle
import sys

import numpy as np

from latentmem.bench import calibration as C
from latentmem.retrieve import relevance as R


def main(path: str) -> None:
    with open(path, "rb") as fh:  # the bench's own samples file
        parts = pickle.load(fh)  # noqa: S301
    samples = [s for c in parts.values() for s in c.samples]
    full = {id(s): R.features(s.query, s.hits) for s in samples}
    recipes = [("before: no role feature, foreign not capped", False, 100.0),
               ("role feature only", True, 100.0), ("foreign capped at 1x only", False, 1.0),
               ("both (shipped)", True, 1.0), ("both, cap 0.5x", True, 0.5),
               ("both, cap 0.25x", True, 0.25), ("both, cap 0.1x", True, 0.1)]
    for name, role, cap in recipes:
        for s in samples:
            x = full[id(s)]
            s.x = x if role else x[:, :-1]
        C.FOREIGN_WEIGHT = cap
        cv = C.cross_validated(samples, 1.0)
        cells = []
        for part in parts:
            idx = [i for i, s in enumerate(samples) if s.unit.startswith(part + "/")]
            f = C.figures([samples[i] for i in idx], [cv[i] for i in idx])
            foreign = [i for i in idx if samples[i].category == "foreign"]
            below = np.mean([cv[i][:C.DEPTH].max() < 0.5 for i in foreign if len(cv[i])])
            cells.append(f"{part} ECE {f['ece']:.3f}, foreign below 0.5 {below:.3f}")
        print(f"{name}: " + "; ".join(cells), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
