"""JUnit XML for CI systems, built from a report dict (what ``--json`` writes).

One ``<testsuites>`` with two suites:

- ``esmdiv.gates``: one test case per gate of the verdict (``reasons``), failing where the gate
  failed, its message carrying the value, the threshold and the verdict.
- ``esmdiv.sequences``: one test case per audited sequence, failing where that sequence breaks a
  gate on its own: non-finite output, pooled cosine at or below ``min_cosine``, MAD at or above
  ``max_mad``, or a label flip while a label-agreement gate failed (a flip under a passing
  agreement gate is noted in the case's output, not failed: the gate allows it).

So the file has failures exactly when the verdict is not ACCEPT. A report that audited several
kernels (``kernels``) has the two suites per kernel instead, ``esmdiv.gates.<backend>`` and
``esmdiv.sequences.<backend>`` (the overall verdict is the worst kernel's, so the file still has
failures exactly when it is not ACCEPT). Each kernel's provenance is a property (``kernel`` or
``kernel.<backend>``). A report with ``complete: false`` becomes one suite with one errored case
saying why there is no verdict.

What is tested of the file (and so what may be relied on):

- it is valid against Jenkins' ``junit-10.xsd`` (the schema the Jenkins xUnit plugin reads JUnit
  files with; a copy is bundled in ``tests/data/``, checked by ``tests/test_junit_xsd.py``) for
  passing, failing and incomplete runs;
- every suite has ``name``, ``tests``, ``failures``, ``errors``, ``time``, ``timestamp`` (ISO 8601,
  no zone) and ``hostname``, and holds ``properties``, then the cases, then ``system-out`` and
  ``system-err``; every case has ``name``, ``classname`` and ``time``; every ``failure``/``error``
  has ``message`` and ``type``; the counts add up (``tests/test_reports.py``).

It is not valid against Ant's ``JUnit.xsd``, which allows no attributes on ``<testsuites>`` and no
``<system-out>`` inside a ``<testcase>``; readers that follow the Jenkins/Surefire layout (Jenkins,
GitLab, the GitHub test-report actions) accept it.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from esmdiv.measure.decision import FALLBACK_GATES
from esmdiv.report.files import write_text
from esmdiv.report.gates import agreement_gate_failed, incomplete_reason, sequence_problems
from esmdiv.report.text import finite_number, kernel_provenances, provenance_line

_XML_ILLEGAL = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def junit_tree(report: dict) -> ET.Element:
    """The ``<testsuites>`` element for ``report``."""
    env = report.get("environment") or {}
    timestamp = (env.get("captured_at") or "1970-01-01T00:00:00Z").rstrip("Z")[:19]
    hostname = (env.get("platform") or {}).get("hostname") or "unknown"
    properties = _properties(report)
    root = ET.Element("testsuites", name="esmdiv")
    if not report.get("complete") or "reasons" not in report:
        suite = _suite(root, "esmdiv.run", 0, timestamp, hostname, properties)
        case = _case(suite, "audit", "esmdiv.run")
        why = incomplete_reason(report)
        _sub(
            case,
            "error",
            why,
            message=f"the audit did not finish: no verdict ({why.splitlines()[0][:300]})",
            type="esmdiv.incomplete",
        )
        _close(suite, "", "")
    else:
        timings = report.get("timings") or {}
        kernels = report.get("kernels") or []
        if not kernels:
            seconds = sum(timings.get(k) or 0.0 for k in ("padded_s", "packed_s"))
            _audit_suites(root, report, report, "", 1, timestamp, hostname, properties, seconds)
        for i, kernel in enumerate(kernels):
            seconds = (timings.get("padded_s") or 0.0) + ((kernel.get("timings") or {}).get("packed_s") or 0.0)
            verdict = f"{kernel['verdict']}; overall {report['verdict']}"
            suffix = f".{kernel['backend']}"
            _audit_suites(root, kernel, report, suffix, 1 + 2 * i, timestamp, hostname, properties, seconds, verdict)
    _count(root)
    return root


def _audit_suites(
    root: ET.Element,
    audit: dict,
    report: dict,
    suffix: str,
    index: int,
    timestamp: str,
    hostname: str,
    properties: list[tuple[str, str]],
    seconds: float,
    verdict: str | None = None,
) -> None:
    """The gates suite and the sequences suite of one audit: the report's own, or one kernel's
    (``audit`` a ``kernels`` entry, ``suffix`` ``.<backend>``)."""
    verdict = verdict or audit["verdict"]
    gates_name = "esmdiv.gates" + suffix
    gates = _suite(root, gates_name, index, timestamp, hostname, properties)
    for reason in audit["reasons"]:
        case = _case(gates, reason["gate"], gates_name)
        if not reason["passed"]:
            consequence = "FALLBACK" if reason["gate"] in FALLBACK_GATES else "VALIDATE"
            _sub(
                case,
                "failure",
                f"gate: {reason['gate']}\nvalue: {reason['value']}\nthreshold: {reason['threshold']}\n"
                f"a failure here alone means {consequence}; the verdict is {verdict}",
                message=f"{reason['message']} (verdict {verdict})",
                type="esmdiv.gate",
            )
    lines = [f"verdict: {verdict}"] + [("PASS " if r["passed"] else "FAIL ") + r["message"] for r in audit["reasons"]]
    _close(gates, "\n".join(lines), "")

    sequences_name = "esmdiv.sequences" + suffix
    sequences = _suite(root, sequences_name, index + 1, timestamp, hostname, properties, time=seconds)
    agreement_failed = agreement_gate_failed(audit)
    for seq in audit["sequences"]:
        case = _case(sequences, seq["id"], sequences_name)
        problems = sequence_problems(seq, report["thresholds"], agreement_failed)
        if problems:
            _sub(
                case,
                "failure",
                _numbers(seq),
                message=f"{seq['id']}: " + "; ".join(problems),
                type="esmdiv.sequence",
            )
        else:
            flip = seq.get("label_v1") != seq.get("label_v2")
            _sub(
                case,
                "system-out",
                _numbers(seq) + ("\nlabel flipped (allowed: the agreement gates pass)" if flip else ""),
            )
    _close(sequences, "", "")


def junit_xml(report: dict) -> str:
    root = junit_tree(report)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(report: dict, path: str | Path) -> None:
    write_text(junit_xml(report), path, option="--junit")


# --- building blocks -----------------------------------------------------------------------------


def _clean(value) -> str:
    return _XML_ILLEGAL.sub("\ufffd", str(value))


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs) -> ET.Element:
    element = ET.SubElement(parent, tag, {k: _clean(v) for k, v in attrs.items()})
    if text is not None:
        element.text = _clean(text)
    return element


def _suite(root, name, index, timestamp, hostname, properties, time: float = 0.0) -> ET.Element:
    suite = _sub(
        root,
        "testsuite",
        name=name,
        id=index,
        package="esmdiv",
        tests=0,
        failures=0,
        errors=0,
        time=f"{time:.3f}",
        timestamp=timestamp,
        hostname=hostname,
    )
    props = _sub(suite, "properties")
    for key, value in properties:
        _sub(props, "property", name=key, value=value)
    return suite


def _case(suite: ET.Element, name: str, classname: str) -> ET.Element:
    return _sub(suite, "testcase", name=name, classname=classname, time="0.000")


def _close(suite: ET.Element, out: str, err: str) -> None:
    _sub(suite, "system-out", out)
    _sub(suite, "system-err", err)


def _count(root: ET.Element) -> None:
    totals = {"tests": 0, "failures": 0, "errors": 0}
    time = 0.0
    for suite in root.iter("testsuite"):
        cases = suite.findall("testcase")
        counts = {
            "tests": len(cases),
            "failures": sum(1 for c in cases if c.find("failure") is not None),
            "errors": sum(1 for c in cases if c.find("error") is not None),
        }
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
        time += float(suite.get("time"))
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", f"{time:.3f}")


def _properties(report: dict) -> list[tuple[str, str]]:
    env = report.get("environment") or {}
    model = report.get("model") or {}
    out = [
        ("verdict", report.get("verdict") or "none (incomplete)"),
        ("esmdiv_version", report.get("esmdiv_version") or (env.get("esmdiv") or {}).get("version")),
        ("model", model.get("spec")),
        ("random_weights", model.get("random_weights")),
        ("device", report.get("device")),
        ("dtype", report.get("dtype")),
        ("backend", report.get("backend")),
        *(
            (f"kernel.{p.get('backend')}" if report.get("kernels") else "kernel", provenance_line(p))
            for p in kernel_provenances(report)
        ),
        *((("fc1", report["fc1"]),) if report.get("fc1") else ()),  # what ran fc1 and its GELU
        ("head", report.get("head")),
        ("fasta", (report.get("input") or {}).get("path")),
    ]
    if env:
        gpu = (env.get("run") or {}).get("gpu")
        out += [
            ("git_commit", (env.get("esmdiv") or {}).get("git_commit")),
            ("torch", (env.get("packages") or {}).get("torch")),
            ("fair-esm", (env.get("packages") or {}).get("fair-esm")),
            ("flash-attn", (env.get("packages") or {}).get("flash-attn") or "absent"),
            ("gpu", gpu and gpu.get("name")),
            ("weights_sha256", ((env.get("model") or {}).get("weights") or {}).get("value")),
            ("fasta_sha256", (env.get("input") or {}).get("sha256")),
        ]
    return [(k, str(v)) for k, v in out if v is not None]


def _numbers(seq: dict) -> str:
    def fmt(v, spec):
        return "n/a (not finite)" if finite_number(v) is None else format(v, spec)

    return (
        f"length {seq.get('length')} (of {seq.get('original_length')})\n"
        f"pooled cosine {fmt(seq.get('cosine'), '.12f')}"
        + ("" if finite_number(seq.get("cosine")) is None else f" (1 - cosine {1 - seq['cosine']:.2e})")
        + "\n"
        f"pooled MAD {fmt(seq.get('mad'), '.3e')}\n"
        f"max |diff| {fmt(seq.get('max_abs_diff'), '.3e')}\n"
        f"label v1/v2 {seq.get('label_v1')}/{seq.get('label_v2')}\n"
        f"confidence v1/v2 {fmt(seq.get('confidence_v1'), '.6f')}/{fmt(seq.get('confidence_v2'), '.6f')}"
    )
