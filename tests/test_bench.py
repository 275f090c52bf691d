"""esmdiv bench: structure and consistency of the results (never speed thresholds), the workload
FASTA writer, and the Hugging Face peer's weight mapping."""

import gzip
import importlib.util
import json
import statistics

import pytest
import torch
from typer.testing import CliRunner

import esmdiv.bench
from esmdiv.bench import PATHS, BenchConfig, make_workload, parse_paths, run_bench
from esmdiv.cli.app import app
from esmdiv.errors import EnvironmentUnavailable, UsageError
from esmdiv.forward.packed import packed_forward
from esmdiv.forward.packing import batches_by_tokens, encode, pad
from esmdiv.forward.padded import ForwardOutput, padded_forward
from esmdiv.input.fasta import read_fasta
from esmdiv.input.workloads import lognormal_workload, write_fasta

from conftest import FIXTURES
from helpers import random_sequences

SEED18 = FIXTURES / "seed18.fasta"
HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None
runner = CliRunner()
# What small_result's paths must say: all three run where transformers is installed (the test extra).
EXPECTED_STATUS = {"padded": "ok", "packed": "ok", "hf": "ok" if HAS_TRANSFORMERS else "not available"}


@pytest.fixture(scope="module")
def small_fasta(tmp_path_factory):
    """Eight short sequences: enough for several batches at a small budget, quick on a CPU."""
    path = tmp_path_factory.mktemp("bench") / "small.fasta"
    write_fasta(list(zip([f"s{i}" for i in range(8)], random_sequences([12, 30, 45, 60, 25, 80, 9, 50], seed=1))), path)
    return path


def bench_cli(*args):
    result = runner.invoke(app, ["bench", *args])
    return result.exit_code, result.stdout, result.stderr


# --- workloads -------------------------------------------------------------------------------------


def test_lognormal_256_seed0_is_the_quoted_workload():
    workload = make_workload(BenchConfig(n=256, seed=0))
    assert (workload.kind, len(workload.sequences)) == ("lognormal", 256)
    assert workload.tokens == 75_807
    assert workload.tokens == sum(len(s.sequence) + 2 for s in lognormal_workload(256, 0))


@pytest.mark.parametrize("name,width", [("w.fasta", 60), ("w.fasta.gz", 60), ("one_line.fa", 0)])
def test_write_fasta_round_trips_through_read_fasta(tmp_path, name, width):
    sequences = lognormal_workload(12, seed=3)
    path = tmp_path / name
    assert write_fasta(sequences, path, width=width) == 12
    records = read_fasta(path)
    assert [(r.id, r.sequence) for r in records] == [(s.id, s.sequence) for s in sequences]
    raw = gzip.open(path, "rt").read() if name.endswith(".gz") else path.read_text()
    longest_line = max(len(line) for line in raw.splitlines() if not line.startswith(">"))
    assert longest_line == (60 if width else max(len(s.sequence) for s in sequences))


def test_write_fasta_takes_id_sequence_pairs(tmp_path):
    path = tmp_path / "pairs.fasta"
    write_fasta([("a", "MKT"), ("b", "ACDEFGHIK" * 20)], path)
    assert [(r.id, len(r.sequence)) for r in read_fasta(path)] == [("a", 3), ("b", 180)]
    assert not list(tmp_path.glob(".*.tmp"))


def test_write_fasta_cli_writes_the_workload_without_loading_a_model(tmp_path, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("--write-fasta must not load a model")

    monkeypatch.setattr(esmdiv.bench, "load_model", no_model)
    out = tmp_path / "big.fasta"
    code, stdout, _ = bench_cli("--workload", "lognormal", "--n", "40", "--seed", "5", "--write-fasta", str(out))
    assert code == 0 and "wrote 40 sequences" in stdout
    expected = lognormal_workload(40, 5)
    assert [r.sequence for r in read_fasta(out)] == [s.sequence for s in expected]
    assert f"{sum(len(s.sequence) + 2 for s in expected):,} tokens" in stdout


# --- run_bench ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_result(random_8m, small_fasta):
    """Every path on eight short sequences, small batches so there are several, 3 timed passes."""
    config = BenchConfig(
        fasta=small_fasta, device="cpu", max_tokens=150, repeats=3, warmup=1, command="esmdiv bench test"
    )
    return run_bench(config, loaded=random_8m)


def test_bench_json_has_every_field(small_result):
    data = json.loads(json.dumps(small_result.to_dict()))
    assert set(data) >= {
        "schema",
        "command",
        "date",
        "esmdiv_version",
        "environment",
        "model",
        "dtype",
        "backend",
        "workload",
        "timing",
        "paths",
        "speedups",
        "warnings",
    }
    assert data["command"] == "esmdiv bench test" and data["date"].endswith("+00:00")
    assert set(data["environment"]) >= {
        "device",
        "device_name",
        "gpu_memory_gib",
        "torch",
        "cuda",
        "fair_esm",
        "transformers",
        "esmdiv",
        "git_commit",
    }
    assert data["environment"]["fair_esm"] and data["environment"]["torch"] == torch.__version__
    assert set(data["workload"]) >= {"kind", "n", "seed", "path", "sequences", "tokens", "batches", "max_tokens"}
    assert (data["dtype"], data["backend"], data["environment"]["device"]) == ("fp32", "reference", "cpu")
    assert data["timing"]["repeats"] == 3 and data["timing"]["warmup"] == 1
    expected_paths = set(PATHS) if HAS_TRANSFORMERS else {"padded", "packed", "hf"}
    assert set(data["paths"]) == expected_paths
    for name in ("padded", "packed"):
        path = data["paths"][name]
        assert set(path) >= {
            "status",
            "seconds",
            "median_s",
            "min_s",
            "max_s",
            "tokens_per_s",
            "sequences_per_s",
            "peak_gpu_memory_gib",
            "check",
        }
        assert path["status"] == "ok" and path["peak_gpu_memory_gib"] is None  # CPU: no GPU memory


def test_bench_counts_exactly_the_workloads_tokens_and_batches(small_result, small_fasta, random_8m):
    records = read_fasta(small_fasta)
    tokens = sum(len(r.sequence) + 2 for r in records)
    data = small_result.to_dict()
    assert data["workload"]["tokens"] == tokens and data["workload"]["sequences"] == len(records) == 8
    lengths = [len(encode(r.sequence, random_8m.alphabet)) for r in records]
    assert data["workload"]["batches"] == len(batches_by_tokens(lengths, 150)) > 1
    assert {name: path["status"] for name, path in data["paths"].items()} == EXPECTED_STATUS
    for name, path in data["paths"].items():
        if path["status"] == "ok":
            assert path["tokens"] == tokens and path["sequences"] == 8, name
    assert data["paths"]["packed"]["token_slots"] == tokens
    assert data["paths"]["padded"]["token_slots"] == data["workload"]["padded_token_slots"] > tokens


def test_bench_statistics_are_consistent(small_result):
    data = small_result.to_dict()
    assert {name: path["status"] for name, path in data["paths"].items()} == EXPECTED_STATUS
    for path in data["paths"].values():
        if path["status"] != "ok":
            continue
        assert len(path["seconds"]) == 3
        assert path["median_s"] == statistics.median(path["seconds"])
        assert path["min_s"] <= path["median_s"] <= path["max_s"]
        assert path["tokens_per_s"] == pytest.approx(path["tokens"] / path["median_s"])
        assert path["sequences_per_s"] == pytest.approx(8 / path["median_s"])
    paths = data["paths"]
    assert data["speedups"]["packed_over_padded"] == pytest.approx(
        paths["padded"]["median_s"] / paths["packed"]["median_s"]
    )
    if paths["hf"]["status"] == "ok":
        assert data["speedups"]["packed_over_hf"] == pytest.approx(
            paths["hf"]["median_s"] / paths["packed"]["median_s"]
        )
    else:
        assert data["speedups"]["packed_over_hf"] is None


def test_bench_checks_each_path_against_fair_esm(small_result):
    paths = small_result.to_dict()["paths"]
    assert paths["padded"]["check"] is None  # the reference
    checked = [name for name in ("packed", "hf") if paths[name]["status"] == "ok"]
    assert checked == [name for name in ("packed", "hf") if EXPECTED_STATUS[name] == "ok"]
    for name in checked:
        check = paths[name]["check"]
        assert check["ok"] and check["finite"] and check["max_abs_diff"] < 1e-4, name
        assert check["batch_tokens"] > 0
    # The one warning is that the weights are random: no check said a path is another model.
    assert small_result.warnings == [
        "model random:8M has RANDOM weights: timings hold for its architecture, not a trained model"
    ]


def test_bench_flags_a_path_that_is_not_the_same_model(random_8m, small_fasta, monkeypatch):
    def wrong(model, packed, backend, **kwargs):
        out = packed_forward(model, packed, backend, **kwargs)
        return ForwardOutput({model.num_layers: -out.representations[model.num_layers]})

    monkeypatch.setattr(esmdiv.bench, "packed_forward", wrong)
    config = BenchConfig(fasta=small_fasta, device="cpu", repeats=1, warmup=0, paths=("padded", "packed"))
    result = run_bench(config, loaded=random_8m)
    check = result.to_dict()["paths"]["packed"]["check"]
    assert not check["ok"] and check["relative_mean_abs_diff"] > 1
    assert any("may not be the same model" in w for w in result.warnings)


def test_bench_times_only_the_paths_asked_for(random_8m):
    config = BenchConfig(workload="lognormal", n=3, seed=2, device="cpu", repeats=1, warmup=0, paths=("packed",))
    data = run_bench(config, loaded=random_8m).to_dict()
    assert list(data["paths"]) == ["packed"]
    assert data["paths"]["packed"]["tokens"] == sum(len(s.sequence) + 2 for s in lognormal_workload(3, 2))
    assert all(v is None for v in data["speedups"].values())


def test_out_of_memory_on_one_path_is_reported_not_fatal(random_8m, small_fasta, monkeypatch):
    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(esmdiv.bench, "packed_forward", oom)
    config = BenchConfig(fasta=small_fasta, device="cpu", repeats=1, warmup=0, paths=("padded", "packed"))
    data = run_bench(config, loaded=random_8m).to_dict()
    assert data["paths"]["padded"]["status"] == "ok"
    assert data["paths"]["packed"]["status"] == "out of memory" and data["paths"]["packed"]["median_s"] is None
    assert data["speedups"]["packed_over_padded"] is None


def test_hf_row_says_not_available_without_transformers(random_8m, small_fasta, monkeypatch):
    monkeypatch.setattr(esmdiv.bench, "hf_unavailable", lambda: "transformers not installed")
    config = BenchConfig(fasta=small_fasta, device="cpu", repeats=1, warmup=0)
    data = run_bench(config, loaded=random_8m).to_dict()
    assert data["paths"]["hf"]["status"] == "not available"
    assert data["paths"]["hf"]["note"] == "not available: transformers not installed"
    assert data["paths"]["packed"]["status"] == "ok" and data["speedups"]["packed_over_hf"] is None
    with pytest.raises(EnvironmentUnavailable, match="transformers not installed"):
        run_bench(BenchConfig(fasta=small_fasta, device="cpu", paths=("hf",)), loaded=random_8m)


# --- CLI -------------------------------------------------------------------------------------------------


def test_cli_bench_prints_the_table_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    code, stdout, _ = bench_cli(
        "--n",
        "3",
        "--seed",
        "2",
        "--device",
        "cpu",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--paths",
        "padded,packed",
        "--json",
        str(out),
    )
    assert code == 0, stdout
    assert "Throughput" in stdout and "speed-up" in stdout and "RANDOM WEIGHTS" in stdout
    data = json.loads(out.read_text())
    assert data["workload"]["kind"] == "lognormal" and data["workload"]["n"] == 3
    assert data["workload"]["tokens"] == sum(len(s.sequence) + 2 for s in lognormal_workload(3, 2))
    assert list(data["paths"]) == ["padded", "packed"]
    assert data["command"].startswith("esmdiv ")


def test_cli_bench_on_a_fasta(tmp_path, small_fasta):
    out = tmp_path / "b.json"
    code, stdout, _ = bench_cli(
        str(small_fasta), "--device", "cpu", "--repeats", "1", "--paths", "packed", "--json", str(out)
    )
    data = json.loads(out.read_text())
    assert code == 0 and data["workload"]["kind"] == "fasta" and data["workload"]["path"] == str(small_fasta)
    assert data["workload"]["sequences"] == 8 and data["paths"]["packed"]["status"] == "ok"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--paths", "padded,fast"], "--paths"),
        (["--workload", "fasta"], "needs a FASTA"),
        ([str(SEED18), "--workload", "lognormal"], "exclude each other"),
        (["--repeats", "0"], "--repeats"),
        (["--workload", "uniform"], "--workload"),
        (["--n", "0"], "--n"),
        ([str(FIXTURES / "does_not_exist.fasta")], "no such file"),
    ],
)
def test_cli_bench_usage_errors_exit_2(args, message):
    code, _, stderr = bench_cli(*args, "--device", "cpu")
    assert code == 2 and message in stderr and "Traceback" not in stderr


def test_cli_bench_hf_asked_without_transformers_exits_3(monkeypatch):
    monkeypatch.setattr(esmdiv.bench, "hf_unavailable", lambda: "transformers not installed")
    code, _, stderr = bench_cli("--paths", "hf", "--device", "cpu", "--n", "2", "--seed", "2")
    assert code == 3 and "transformers not installed" in stderr


def test_parse_paths_keeps_a_fixed_order():
    assert parse_paths("hf, packed") == ("packed", "hf")
    with pytest.raises(UsageError, match=r"^--paths ',': choose one or more of padded,packed,hf$"):
        parse_paths(",")


# --- the Hugging Face peer ---------------------------------------------------------------------------


needs_transformers = pytest.mark.skipif(not HAS_TRANSFORMERS, reason="transformers is not installed")


@needs_transformers
def test_hf_peer_gives_fair_esm_hidden_states_on_cpu_fp32(random_8m):
    from esmdiv.model.hf_peer import build_hf_peer, hf_forward

    model, alphabet = random_8m.model, random_8m.alphabet
    peer = build_hf_peer(random_8m)
    sequences = random_sequences([3, 37, 150, 290], seed=7)
    tokens = pad([encode(s, alphabet) for s in sequences], alphabet.padding_idx)
    tokens[2, 9] = alphabet.mask_idx  # exercises token-dropout scaling on both sides
    mask = (tokens != alphabet.padding_idx).to(torch.int64)
    expected = padded_forward(model, tokens).representations[model.num_layers]
    got = hf_forward(peer, tokens, mask)
    real = mask.bool()
    assert got.shape == expected.shape
    assert float((got[real] - expected[real]).abs().max()) < 1e-5
    assert float(expected[real].abs().mean()) > 0.1  # a non-trivial output, not zeros on both sides


@needs_transformers
def test_hf_peer_shares_every_weight_with_fair_esm(random_8m):
    from esmdiv.model.hf_peer import build_hf_peer, fair_key

    peer = build_hf_peer(random_8m).model
    fair = random_8m.model.state_dict()
    assert peer.config._attn_implementation == "sdpa" and peer.pooler is None
    mapped = {}
    for key, tensor in peer.state_dict().items():
        if key.endswith("inv_freq"):
            assert tensor.dtype == torch.float32
            continue
        source = fair_key(key)
        assert source in fair, key
        assert tensor.data_ptr() == fair[source].data_ptr() and tensor.dtype == fair[source].dtype, key
        mapped[key] = source
    assert len(set(mapped.values())) == len(mapped)  # one fair-esm tensor per HF parameter
    wanted = {k for k in fair if not k.startswith("lm_head.") and not k.endswith("inv_freq")}
    assert set(mapped.values()) == wanted


# --- CUDA (skipped without a GPU) --------------------------------------------------------------------


@pytest.mark.gpu
def test_bench_on_cuda_reports_memory_and_passes_its_checks(cuda):
    config = BenchConfig(workload="lognormal", n=24, seed=0, device="cuda", dtype="fp16", repeats=2, warmup=1)
    data = run_bench(config).to_dict()
    assert data["environment"]["device_name"] and data["environment"]["gpu_memory_gib"] > 0
    assert data["timing"]["synchronised"] is True and data["backend"] in ("flash-attn", "fa4", "torch")
    for name, path in data["paths"].items():
        if path["status"] == "not available":
            continue
        assert path["status"] == "ok", name
        assert path["peak_gpu_memory_gib"] >= path["resident_gpu_memory_gib"] > 0, name
        assert path["tokens"] == data["workload"]["tokens"], name
        if name != "padded":
            assert path["check"]["ok"], (name, path["check"])


def test_an_hf_version_the_mapping_does_not_know_is_not_available(random_8m, small_fasta, monkeypatch):
    def unknown_key(loaded):
        raise EnvironmentUnavailable("transformers 9.0: EsmModel key 'x.y' has no fair-esm counterpart")

    monkeypatch.setattr(esmdiv.bench, "hf_unavailable", lambda: None)  # installed, but a version we cannot map
    monkeypatch.setattr(esmdiv.bench, "build_hf_peer", unknown_key)
    data = run_bench(BenchConfig(fasta=small_fasta, device="cpu", repeats=1, warmup=0), loaded=random_8m).to_dict()
    hf = data["paths"]["hf"]
    assert hf == {**hf, "status": "not available", "median_s": None}
    assert hf["note"] == "not available: transformers 9.0: EsmModel key 'x.y' has no fair-esm counterpart"
    assert data["paths"]["packed"]["status"] == "ok" and data["speedups"]["packed_over_hf"] is None
    with pytest.raises(EnvironmentUnavailable, match=r"^transformers 9.0: EsmModel key 'x\.y' has no fair-esm"):
        run_bench(BenchConfig(fasta=small_fasta, device="cpu", paths=("packed", "hf")), loaded=random_8m)
