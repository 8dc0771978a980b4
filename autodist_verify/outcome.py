"""What running one property on one case can give (see :mod:`autodist_verify.runner`)."""

from __future__ import annotations

from dataclasses import dataclass

PASS, FAIL, NOT_APPLICABLE, ERROR = "pass", "fail", "n/a", "error"


@dataclass(frozen=True)
class Outcome:
    """``status`` is PASS, FAIL, NOT_APPLICABLE or ERROR; ``detail`` says why for
    anything but a pass."""

    status: str
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == PASS
