"""Self-test: would the audit notice the bugs that real packed ESM-2 paths have shipped with?

Each known bug (:mod:`esmdiv.forward.faults`) is forced into the packed path in turn and the whole
audit runs on the shipped 18-sequence fixture, once more with no bug, in two configurations:

- ``default``: what ``esmdiv check`` runs when given no option (the evidence pass on a sample),
  the configuration release scripts use;
- ``full``: every gate on every sequence (``--evidence all --trace``).

A bug counts as caught only when a gate fails *and* the bug's value of that gate is at least
:data:`~esmdiv.measure.noise.REQUIRED_MARGIN` times the clean run's value of the same gate in the
same configuration (:func:`~esmdiv.measure.noise.margin`): a gate that trips on a bug by no more
than rounding differs between machines is a coin toss, not a catch. The self-test passes when both
clean runs are ACCEPT and every bug is caught, with margin, in both configurations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

from esmdiv.audit.results import AuditResult
from esmdiv.audit.run import AuditConfig, run_audit
from esmdiv.errors import UsageError
from esmdiv.forward.attention import parse_backends
from esmdiv.forward.device import resolve_device, resolve_dtype
from esmdiv.forward.faults import Fault
from esmdiv.measure.decision import Reason, Thresholds, Verdict
from esmdiv.measure.noise import REQUIRED_MARGIN, margin
from esmdiv.model.loading import load_model

#: The configurations each bug is injected into: name -> AuditConfig options.
CONFIGURATIONS: dict[str, dict] = {
    "default": {},
    "full": {"evidence": "all", "trace": True},
}


def seed18_path() -> Path:
    """The shipped 18-sequence fixture (inside the package, so an installed esmdiv has it)."""
    return Path(str(resources.files("esmdiv") / "data" / "seed18.fasta"))


@dataclass
class GateMargin:
    """One failed gate of a bug's run, beside the clean run's value of the same gate."""

    gate: str
    value: float | None
    threshold: float | None
    clean_value: float | None
    margin: float | None  # the bug's badness over the clean run's (esmdiv.measure.noise.margin); None: clean run

    @property
    def with_margin(self) -> bool:
        return self.margin is not None and self.margin >= REQUIRED_MARGIN


@dataclass
class SelftestRow:
    configuration: str  # "default" or "full"
    bug: str  # the fault's name, or "none"
    description: str
    verdict: str
    caught_by: list[str]  # the failed gates whose margin over the clean run is at least REQUIRED_MARGIN
    evidence: str  # the message of the catching gate (or of the first failed one; the clean run: its worst)
    ok: bool  # clean: ACCEPT; a bug: not ACCEPT and caught with margin
    gates: list[GateMargin] = field(default_factory=list)  # every failed gate (clean run: every gate)

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
    configurations: tuple[str, ...] = tuple(CONFIGURATIONS),
) -> tuple[list[SelftestRow], dict]:
    """Per configuration, the clean audit and one audit per fault; returns the rows and the settings.

    ``backend``: one backend (or ``auto``): the faults are injected into that kernel's packed path.
    """
    names = parse_backends(backend)
    if len(names) != 1 or names == ("all",):
        raise UsageError(
            f"selftest --backend '{backend}': give one backend (auto, flash-attn, fa4, torch, reference); "
            "the bugs are injected into that kernel's packed path"
        )
    fasta = fasta or seed18_path()
    resolved = resolve_device(device)
    _, torch_dtype = resolve_dtype(dtype, resolved)
    loaded = load_model(model, resolved, torch_dtype)  # once: every audit reuses it
    rows: list[SelftestRow] = []
    settings: dict = {}
    for name in configurations:
        clean: AuditResult | None = None
        for fault in [None, *(faults if faults is not None else list(Fault))]:
            config = AuditConfig(
                fasta=fasta,
                model=model,
                device=device,
                dtype=dtype,
                backend=backend,
                thresholds=thresholds or Thresholds(),
                faults=frozenset([fault]) if fault else frozenset(),
                mlm=False,
                **CONFIGURATIONS[name],
            )
            result = run_audit(config, loaded=loaded)
            settings = settings or {
                "model": result.model,
                "device": result.device,
                "dtype": result.dtype,
                "backend": result.backend,
                "kernel": result.kernel,
                "fasta": str(fasta),
                "heads": result.heads,
                "configurations": {n: CONFIGURATIONS[n] for n in configurations},
                "required_margin": REQUIRED_MARGIN,
            }
            if fault is None:
                clean = result
                row = _clean_row(name, result)
            else:
                row = _bug_row(name, fault, result, clean)
            rows.append(row)
            if on_row:
                on_row(row)
    return rows, settings


def _clean_row(configuration: str, result: AuditResult) -> SelftestRow:
    verdict = result.decision.verdict
    failed = [r for r in result.decision.reasons if not r.passed]
    gates = [GateMargin(r.gate, r.value, r.threshold, r.value, None) for r in result.decision.reasons]
    return SelftestRow(
        configuration,
        "none",
        "no bug injected",
        verdict.value,
        [r.gate for r in failed],
        failed[0].message if failed else "every gate passed",
        verdict is Verdict.ACCEPT,
        gates,
    )


def _bug_row(configuration: str, fault: Fault, result: AuditResult, clean: AuditResult | None) -> SelftestRow:
    verdict = result.decision.verdict
    clean_reasons = {r.gate: r for r in clean.decision.reasons} if clean is not None else {}
    failed = [r for r in result.decision.reasons if not r.passed]
    gates = [_gate_margin(r, clean_reasons.get(r.gate)) for r in failed]
    caught = [g for g in gates if g.with_margin]
    shown = next((r for r in failed if caught and r.gate == caught[0].gate), failed[0] if failed else None)
    return SelftestRow(
        configuration,
        fault.value,
        fault.description,
        verdict.value,
        [g.gate for g in caught],
        shown.message if shown else "no gate failed: the bug slipped through",
        verdict is not Verdict.ACCEPT and bool(caught),
        gates,
    )


def _gate_margin(reason: Reason, clean: Reason | None) -> GateMargin:
    clean_value = clean.value if clean is not None else None
    return GateMargin(
        reason.gate,
        reason.value,
        reason.threshold,
        clean_value,
        margin(reason.gate, reason.value, reason.threshold, clean_value),
    )


def passed(rows: list[SelftestRow]) -> bool:
    return bool(rows) and all(row.ok for row in rows)


def shown_gate(row: SelftestRow) -> GateMargin | None:
    """The gate a table shows for a bug's row: the catching gate with the largest margin, else the
    failed gate with the largest margin (None where no gate failed or for the clean run)."""
    if row.bug == "none" or not row.gates:
        return None
    return max(row.gates, key=lambda g: (g.with_margin, g.margin if g.margin is not None else -math.inf))
