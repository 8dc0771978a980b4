"""What running one property on one case can give (see :mod:`autodist_verify.runner`),
and the exceptions a property raises to say so."""

from __future__ import annotations

from dataclasses import dataclass

PASS, FAIL, NOT_APPLICABLE, ERROR = "pass", "fail", "n/a", "error"


@dataclass(frozen=True)
class Outcome:
    """``status`` is PASS, FAIL, NOT_APPLICABLE or ERROR; ``detail`` says why for
    anything but a pass; ``observed`` are feature labels the property learned from the
    implementation while running (counted with the case's features)."""

    status: str
    detail: str = ""
    observed: tuple[str, ...] = ()


class PropertyFailure(AssertionError):
    """A property does not hold; the message lists every problem."""


class NotApplicable(Exception):
    """The property cannot hold for this case, for a reason outside the implementation."""


MAX_REPORTED_PROBLEMS = 40


def fail_if(problems: list[str]) -> None:
    """Raise :class:`PropertyFailure` listing ``problems`` (the first 40), if there are any."""
    if problems:
        shown = problems[:MAX_REPORTED_PROBLEMS]
        more = len(problems) - len(shown)
        raise PropertyFailure("\n".join(shown) + (f"\n... and {more} more" if more else ""))
