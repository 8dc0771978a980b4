"""The conformance matrix: properties x strategies, each cell pass / fail / error / n/a.

Every example a property runs is recorded once under its strategy's column (the
builder's name, ``custom`` for hand-made strategies, ``-`` for properties without one);
the cases Hypothesis tries while shrinking a failure are not examples. A cell fails if
any example failed, shows an error if the harness failed on one (and none failed),
passes if at least one example passed, and is not applicable if every example was.
Cells nobody ran stay empty ("not run") — an empty cell is not a pass.

The verdict is "conforms" only for a complete run without failures or errors; a run
that was interrupted, stopped early or hit harness errors is "incomplete".
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from autodist_verify.case import BUILDERS
from autodist_verify.outcome import ERROR, FAIL, NOT_APPLICABLE, PASS

COLUMNS = (*BUILDERS, "custom", "-")


@dataclass
class Cell:
    passed: int = 0
    failed: int = 0
    errors: int = 0
    not_applicable: int = 0
    reasons: set[str] = field(default_factory=set)

    @property
    def verdict(self) -> str:
        if self.failed:
            return FAIL
        if self.errors:
            return ERROR
        if self.passed:
            return PASS
        if self.not_applicable:
            return NOT_APPLICABLE
        return "not run"

    def text(self) -> str:
        counts = {PASS: self.passed, FAIL: self.failed, ERROR: self.errors, NOT_APPLICABLE: self.not_applicable}
        return f"{self.verdict} ({counts[self.verdict]})" if self.verdict in counts else ""


class Matrix:
    """Outcomes recorded during a run."""

    def __init__(self) -> None:
        self.cells: dict[str, dict[str, Cell]] = defaultdict(lambda: defaultdict(Cell))
        self.reproductions: list[str] = []
        self.errors: list[str] = []
        self.incomplete: str | None = None  # why the run did not finish, if it did not
        self.features: Counter[str] = Counter()  # examples that exercised each case feature

    def record(self, prop: str, column: str, outcome: str, reason: str = "") -> None:
        cell = self.cells[prop][column]
        if outcome == PASS:
            cell.passed += 1
        elif outcome == FAIL:
            cell.failed += 1
        elif outcome == ERROR:
            cell.errors += 1
            self.errors.append(f"{prop} / {column}: {reason.splitlines()[0] if reason else 'error'}")
            return
        else:
            cell.not_applicable += 1
        if reason:
            cell.reasons.add(reason)

    def absorb(self, data: dict) -> None:
        """Add the outcomes of another matrix, given as its :meth:`to_dict` (a
        pytest-xdist worker's share of the run)."""
        for prop, row in data["properties"].items():
            for column, counts in row.items():
                cell = self.cells[prop][column]
                cell.passed += counts["passed"]
                cell.failed += counts["failed"]
                cell.errors += counts["errors"]
                cell.not_applicable += counts["not_applicable"]
                cell.reasons.update(counts["reasons"])
        self.errors += data["errors"]
        self.reproductions += data["reproductions"]
        self.features.update(data["features"])

    def record_features(self, features: list[str]) -> None:
        """Count one example's features (``Case.features``)."""
        self.features.update(features)

    @property
    def empty(self) -> bool:
        return not self.cells

    @property
    def failed(self) -> bool:
        return any(c.verdict == FAIL for row in self.cells.values() for c in row.values())

    @property
    def conforms(self) -> bool:
        """True only for a complete run with examples, no failure and no error."""
        return not self.empty and not self.failed and not self.errors and self.incomplete is None

    @property
    def verdict(self) -> str:
        if self.failed:
            return "does NOT conform"
        if self.conforms:
            return "conforms"
        reasons = ([self.incomplete] if self.incomplete else []) + (
            [f"{len(self.errors)} harness error(s)"] if self.errors else []) + (
            ["no example ran"] if self.empty else [])
        return f"incomplete ({'; '.join(reasons)}): no verdict on conformance"

    def columns(self) -> list[str]:
        used = {column for row in self.cells.values() for column in row}
        return [c for c in COLUMNS if c in used] + sorted(used - set(COLUMNS))

    def to_dict(self, implementation: str) -> dict:
        return {
            "implementation": implementation,
            "conforms": self.conforms,
            "verdict": self.verdict,
            "incomplete": self.incomplete,
            "errors": self.errors,
            "properties": {
                prop: {
                    column: {"verdict": cell.verdict, "passed": cell.passed, "failed": cell.failed,
                             "errors": cell.errors, "not_applicable": cell.not_applicable,
                             "reasons": sorted(cell.reasons)}
                    for column, cell in row.items()
                }
                for prop, row in sorted(self.cells.items())
            },
            "reproductions": self.reproductions,
            "features": dict(sorted(self.features.items())),
        }

    def markdown(self, implementation: str) -> str:
        columns = self.columns()
        lines = [
            f"# Conformance of `{implementation}`",
            "",
            "| property | " + " | ".join(columns) + " |",
            "| --- | " + " | ".join("---" for _ in columns) + " |",
        ]
        for prop, row in sorted(self.cells.items()):
            lines.append(f"| {prop} | " + " | ".join(row[c].text() if c in row else "" for c in columns) + " |")
        reasons = sorted({r for row in self.cells.values() for cell in row.values() for r in cell.reasons})
        if reasons:
            lines += ["", "Not applicable, and why:", *[f"- {r}" for r in reasons]]
        if self.features:
            drawn = ", ".join(f"{name} ({count})" for name, count in sorted(self.features.items()))
            lines += ["", f"Examples per case feature: {drawn}"]
        if self.errors:
            lines += ["", "Harness errors (not counted against the implementation):", *[f"- {e}" for e in self.errors]]
        if self.reproductions:
            lines += ["", "Reproductions (`autodist-verify replay FILE`):", *[f"- {p}" for p in self.reproductions]]
        lines += ["", f"Verdict: {self.verdict}"]
        return "\n".join(lines) + "\n"

    def write(self, directory: Path, implementation: str) -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        json_path, md_path = directory / "matrix.json", directory / "matrix.md"
        json_path.write_text(json.dumps(self.to_dict(implementation), indent=2) + "\n")
        md_path.write_text(self.markdown(implementation))
        return json_path, md_path
