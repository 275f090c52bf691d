"""JSON Schemas shipped with esmdiv (package data, present in a non-editable install too).

``report.schema.json`` describes what ``esmdiv check --json`` writes; its ``$defs`` also hold
``environment_report``, what ``esmdiv env --json`` writes.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
REPORT_SCHEMA = "report.schema.json"


@cache
def _text(name: str) -> str:
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def report_schema() -> dict:
    """The report schema as a fresh dict (draft 2020-12)."""
    return json.loads(_text(REPORT_SCHEMA))


def environment_report_schema() -> dict:
    """The schema of ``esmdiv env --json``: the report schema's ``environment_report``."""
    schema = report_schema()
    return {"$schema": schema["$schema"], "$defs": schema["$defs"], "$ref": "#/$defs/environment_report"}


def validation_errors(instance: dict, schema: dict | None = None) -> list[str]:
    """Every way ``instance`` breaks ``schema`` (the report schema by default), as readable lines."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema or report_schema())
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
        for error in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
    ]


@dataclass(frozen=True)
class SchemaProblem:
    """One way a report breaks the schema: where (a JSON pointer, RFC 6901), which rule, and why."""

    pointer: str  # "/reasons/0/passed"; "" is the whole report
    rule: str  # the schema keyword that failed: "required", "enum", "type", "maximum", ...
    message: str  # one line

    def __str__(self) -> str:
        return f"{self.pointer or '/'}: {self.message}"


def schema_problems(instance: Any, schema: dict | None = None) -> list[SchemaProblem]:
    """Every field at which ``instance`` breaks ``schema`` (the report schema by default), with the
    first rule it breaks there: a rule over alternatives (``anyOf``) is reported by its most relevant
    branch, and a missing required field by the field's own pointer. In order of the pointers."""
    import jsonschema
    from jsonschema.exceptions import best_match

    validator = jsonschema.Draft202012Validator(schema or report_schema())
    problems = []
    for error in validator.iter_errors(instance):
        leaf = best_match([error]) if error.context else error
        path = [str(part) for part in leaf.absolute_path]
        message = leaf.message
        if leaf.validator == "required" and isinstance(leaf.validator_value, list):
            missing = next(
                (f for f in leaf.validator_value if isinstance(leaf.instance, dict) and f not in leaf.instance), None
            )
            if missing is not None:
                path.append(missing)
                message = "required field missing"
        pointer = "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in path)
        problems.append(SchemaProblem(pointer, str(leaf.validator), _short(message)))
    first_per_field = {}
    for problem in problems:  # a field broken under two rules (a partial's and a complete report's) once
        first_per_field.setdefault(problem.pointer, problem)
    return sorted(first_per_field.values(), key=lambda p: p.pointer)


def _short(message: str, limit: int = 200) -> str:
    line = " ".join(message.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def read_report(path: str | Path) -> dict:
    """A report from ``esmdiv check --json`` (``-``: from standard input), validated against the
    shipped schema; anything else is an input error naming the file and, for a report that breaks
    the schema, the JSON pointer of the first field at fault and why."""
    from esmdiv import __version__
    from esmdiv.errors import InputError

    if str(path) == "-":
        path = "<stdin>"
    try:
        text = sys.stdin.buffer.read().decode("utf-8") if path == "<stdin>" else Path(path).read_text(encoding="utf-8")
        data = json.loads(text)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read it ({getattr(err, 'strerror', None) or err})") from None
    except ValueError as err:
        raise InputError(f"{path}: not JSON ({err})") from None
    if not isinstance(data, dict) or "schema_version" not in data or "complete" not in data:
        raise InputError(f"{path}: not an esmdiv report (no schema_version and complete fields)")
    version = data["schema_version"]
    if not isinstance(version, int) or version > SCHEMA_VERSION or version < 1:
        raise InputError(
            f"{path}: report schema_version {version!r}; this esmdiv ({__version__}) reads 1 to {SCHEMA_VERSION}"
        )
    if data["complete"] and not all(k in data for k in ("verdict", "reasons", "sequences", "thresholds")):
        raise InputError(f"{path}: marked complete but lacks verdict, reasons, sequences or thresholds")
    problems = schema_problems(data)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise InputError(f"{path}: {problems[0]}{more}; not a valid esmdiv report (schema_version {version})")
    return data
