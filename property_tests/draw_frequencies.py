"""How often random draws of the suite's strategies reach each case feature.

    python -m property_tests.draw_frequencies --draws 300 --label custom

The ``ci`` profile is derandomized: its matrix ("Examples per case feature") counts what
that one fixed set of draws reaches. This counts the features (``Case.features()``) of
``--draws`` random draws instead, as the generator's weights make them, without running
any case: a check that rare layouts are not rare by accident.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections import Counter

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from property_tests.strategies import STRATEGY_LABELS, cases, saver_programs

SAVER_PROGRAM = "saver program"


def count_features(draws: int, label: str | None, random_seed: int) -> Counter[str]:
    """The feature counts of ``draws`` random cases (strategy ``label``; or saver
    programs when ``label`` is :data:`SAVER_PROGRAM`), drawn from ``random_seed``."""
    counts: Counter[str] = Counter()
    if label == SAVER_PROGRAM:
        source = st.builds(lambda case, program: dataclasses.replace(case, saver_program=program),
                           cases(), saver_programs())
    else:
        source = cases(label)

    @seed(random_seed)
    @settings(max_examples=draws, database=None, deadline=None, derandomize=False, phases=["generate"],
              suppress_health_check=list(HealthCheck))
    @given(source)
    def draw(case):
        counts.update(set(case.features()))
        counts["(draws)"] += 1

    draw()
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=300, help="how many cases to draw (default 300)")
    parser.add_argument("--label", choices=[*STRATEGY_LABELS, SAVER_PROGRAM], default=None,
                        help="draw cases of this strategy only, or saver programs (default: any strategy)")
    parser.add_argument("--seed", type=int, default=0, help="the random seed (default 0)")
    args = parser.parse_args()
    counts = count_features(args.draws, args.label, args.seed)
    total = counts.pop("(draws)")
    print(f"{total} draws ({args.label or 'any strategy'}, seed {args.seed}):")
    for feature, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        print(f"  {count:5d}  {feature}")


if __name__ == "__main__":
    main()
