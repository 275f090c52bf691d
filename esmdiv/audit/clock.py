"""Where an audit's seconds went: one clock, laps by stage, parts that add up to the wall time.

The report's ``timings.stages`` holds each stage's wall seconds, and ``timings.wall_s`` the time from
the moment esmdiv was imported (``esmdiv.IMPORTED_AT``; the interpreter's own start-up before that is
not counted) to the moment the JSON report is serialised. The stages are consecutive laps of one
clock, so they add up to the wall time exactly; the forwards are timed inside the audit stage (each
ends with a device synchronisation) and split out of it:

- ``startup``: imports, CUDA start-up and option parsing, before the audit begins;
- ``options``, ``input`` (reading and validating the FASTA), ``model_load``;
- ``compile``: the warm-up, where ``torch.compile`` builds the packed path's kernels (and every
  backend loads its own);
- ``padded``, ``packed``: the main pass's two forwards;
- ``mlm``: the token-level metrics and the masked-perplexity sample's forwards;
- ``metrics``: the rest of the main pass (pooling, comparisons, heads, trace, host copies);
- ``reference``: the high-precision run and the packed algorithm at its precision (evidence pass);
- ``evidence``: the evidence pass's other forwards (both paths again, the position probe) and its
  measurements;
- ``decision``, ``fingerprint``, ``report`` (JUnit, building the JSON; the terminal shows the verdict
  after the reports are written, so a report that cannot be written leaves no verdict on screen).
"""

from __future__ import annotations

import time
from collections.abc import Iterable


class StageClock:
    """Laps of one wall clock, by stage name (a stage may be lapped several times)."""

    def __init__(self, started: float | None = None):
        now = time.perf_counter()
        self.started = now if started is None else started
        self.seconds: dict[str, float] = {}
        self._mark = self.started
        if started is not None:
            self.lap("startup")

    def lap(self, stage: str) -> float:
        """Charge the time since the last lap to ``stage``; returns it."""
        now = time.perf_counter()
        spent = now - self._mark
        self.seconds[stage] = self.seconds.get(stage, 0.0) + spent
        self._mark = now
        return spent

    def split(self, stage: str, parts: dict[str, float]) -> None:
        """Move ``parts`` (seconds measured inside ``stage``) out of ``stage`` into their own names."""
        for name, spent in parts.items():
            self.seconds[stage] = self.seconds.get(stage, 0.0) - spent
            self.seconds[name] = self.seconds.get(name, 0.0) + spent

    def wall(self) -> float:
        return time.perf_counter() - self.started

    def report(self, order: Iterable[str] = ()) -> dict:
        """``{"wall_s", "stages": {name_s: seconds}}`` with the stages in ``order`` first; the time
        since the last lap is charged to ``other``."""
        self.lap("other")
        names = [n for n in order if n in self.seconds] + [n for n in self.seconds if n not in order]
        return {"wall_s": sum(self.seconds.values()), "stages": {f"{n}_s": max(self.seconds[n], 0.0) for n in names}}


#: The order stages appear in the report.
STAGES = (
    "startup",
    "options",
    "input",
    "model_load",
    "compile",
    "padded",
    "packed",
    "mlm",
    "metrics",
    "reference",
    "evidence",
    "decision",
    "fingerprint",
    "report",
    "other",
)
