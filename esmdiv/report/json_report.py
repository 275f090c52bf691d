"""Writing a report as JSON: atomically, non-finite numbers as null.

The report's content comes from its producer (:meth:`esmdiv.audit.results.AuditResult.to_dict`,
:meth:`esmdiv.report.partial.PartialRun.to_dict`, a benchmark's or a self-test's ``to_dict``);
this module only turns a dict into the file. Free of torch, so a run interrupted while torch was
still importing can still write its partial report.
"""

from __future__ import annotations

import json
from pathlib import Path

from esmdiv.report.files import finite_or_none, write_text


def write_json(data: dict, path: str | Path, option: str = "--json") -> None:
    """Write ``data`` as JSON atomically (a reader never sees half a file). NaN becomes null."""
    write_text(json.dumps(finite_or_none(data), indent=2, allow_nan=False) + "\n", path, option)
