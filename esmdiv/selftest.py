"""Self-test: would the audit notice the bugs that real packed ESM-2 paths have shipped with?

Each known bug (:mod:`esmdiv.forward.faults`) is forced into the packed path in turn and the whole
audit runs on the shipped 18-sequence fixture, with the high-precision reference and the
neighbour-invariance pass on; once more with no bug. The self-test passes when the clean run is
ACCEPT and no injected bug is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from esmdiv.audit.results import AuditResult
from esmdiv.audit.run import AuditConfig, run_audit
from esmdiv.forward.device import resolve_device, resolve_dtype
from esmdiv.forward.faults import Fault
from esmdiv.measure.decision import Thresholds, Verdict
from esmdiv.model.loading import load_model


def seed18_path() -> Path:
    """The shipped 18-sequence fixture (inside the package, so an installed esmdiv has it)."""
    return Path(str(resources.files("esmdiv") / "data" / "seed18.fasta"))


@dataclass
class SelftestRow:
    bug: str  # the fault's name, or "none"
    description: str
    verdict: str
    caught_by: list[str]  # the gates that failed
    evidence: str  # the message of the first failed gate (or of the clean run's tightest gate)
    ok: bool  # clean: ACCEPT; a bug: anything but ACCEPT

    def to_dict(self) -> dict:
        return asdict(self)


def run_selftest(
    model: str = "random:8M",
    device: str = "auto",
    dtype: str | None = None,
    backend: str = "auto",
    fasta: Path | None = None,
    thresholds: Thresholds | None = None,
    faults: list[Fault] | None = None,
    on_row: Callable[[SelftestRow], None] | None = None,
) -> tuple[list[SelftestRow], dict]:
    """Run the clean audit and one audit per fault; returns the rows and the run's settings."""
    fasta = fasta or seed18_path()
    resolved = resolve_device(device)
    _, torch_dtype = resolve_dtype(dtype, resolved)
    loaded = load_model(model, resolved, torch_dtype)  # once: every audit reuses it
    rows: list[SelftestRow] = []
    settings: dict = {}
    for fault in [None, *(faults if faults is not None else list(Fault))]:
        config = AuditConfig(
            fasta=fasta,
            model=model,
            device=device,
            dtype=dtype,
            backend=backend,
            thresholds=thresholds or Thresholds(),
            faults=frozenset([fault]) if fault else frozenset(),
            high_precision="fp32",
            invariance=True,
            mlm=False,
        )
        result = run_audit(config, loaded=loaded)
        settings = settings or {
            "model": result.model,
            "device": result.device,
            "dtype": result.dtype,
            "backend": result.backend,
            "fasta": str(fasta),
            "heads": result.heads,
        }
        row = _row(fault, result)
        rows.append(row)
        if on_row:
            on_row(row)
    return rows, settings


def _row(fault: Fault | None, result: AuditResult) -> SelftestRow:
    verdict = result.decision.verdict
    failed = [r for r in result.decision.reasons if not r.passed]
    if fault is None:
        return SelftestRow(
            "none",
            "no bug injected",
            verdict.value,
            [r.gate for r in failed],
            failed[0].message if failed else "every gate passed",
            verdict is Verdict.ACCEPT,
        )
    return SelftestRow(
        fault.value,
        fault.description,
        verdict.value,
        [r.gate for r in failed],
        failed[0].message if failed else "no gate failed: the bug slipped through",
        verdict is not Verdict.ACCEPT,
    )


def passed(rows: list[SelftestRow]) -> bool:
    return bool(rows) and all(row.ok for row in rows)
