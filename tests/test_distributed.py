"""torchrun audits: two CPU processes over gloo give the single-process report; a rank that fails,
rank 0 or another, before the audit or during it, fails the run with its exact exit code and rank 0's
complete partial report, and no rank is left waiting for a dead one."""

import json
import os
import pickle
import re
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from esmdiv.distributed import shard_by_tokens

from conftest import FIXTURES, ROOT

SEED18 = str(FIXTURES / "seed18.fasta")
# Six short sequences; --max-tokens 64 makes several batches per rank.
SMALL = "".join(f">s{n}\n{'MKTAYIAKVLGLFDIVKKVVGALGSLWW'[:n]}\n" for n in (8, 12, 16, 20, 24, 28))
PER_SEQUENCE_FLOATS = (
    "cosine",
    "mad",
    "max_abs_diff",
    "rel_l2",
    "residue_cosine_min",
    "confidence_v1",
    "confidence_v2",
)
# fp32 rounding, measured on values of order 1: the two runs batch differently (a rank pads only its
# own shard) and run other thread counts, so the same sums are rounded in another order.
REL, ABS = 1e-5, 1e-6


def test_shards_cover_everything_once_and_balance_tokens():
    lengths = {i: n for i, n in enumerate([400, 5, 300, 300, 20, 250, 100, 90, 12, 402])}
    shards = shard_by_tokens(lengths, 3)
    assert sorted(i for s in shards for i in s) == sorted(lengths)
    loads = [sum(lengths[i] for i in s) for s in shards]
    assert max(loads) - min(loads) <= max(lengths.values())
    assert shard_by_tokens(lengths, 3) == shards  # every rank computes the same split


def test_shards_take_the_longest_first():
    # in file order the two short ones would split and the long one land on a loaded rank (3 vs 1)
    assert shard_by_tokens({0: 1, 1: 1, 2: 2}, 2) == [{2}, {0, 1}]
    # equal lengths: the lower index first, to the lower rank
    assert shard_by_tokens({0: 5, 1: 5, 2: 5, 3: 5}, 2) == [{0, 2}, {1, 3}]


def _env(extra_env=None, hook=None):
    path = ([str(hook)] if hook else []) + [str(ROOT), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path), "OMP_NUM_THREADS": "1", **(extra_env or {})}


def _torchrun(tmp_path, *args, extra_env=None, hook=None):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "esmdiv", "check", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(extra_env, hook), cwd=tmp_path, timeout=600)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_ranks(tmp_path, *args, extra_env=None, hook=None, timeout=180):
    """Two ranks started by hand, as torchrun would start them but with no agent watching: each
    rank's own exit code is seen, and a rank waiting for a dead one is not killed for it (it would
    hang here until ``timeout``)."""
    port = str(_free_port())
    ranks = []
    for rank in range(2):
        env = _env(
            {
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": port,
                "WORLD_SIZE": "2",
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                "LOCAL_WORLD_SIZE": "2",
                **(extra_env or {}),
            },
            hook,
        )
        ranks.append(
            subprocess.Popen(
                [sys.executable, "-m", "esmdiv", "check", *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                cwd=tmp_path,
            )
        )
    try:
        outputs = [p.communicate(timeout=timeout) for p in ranks]
    except subprocess.TimeoutExpired:
        for p in ranks:
            p.kill()
        pytest.fail(f"a rank still ran after {timeout} s: it waited for a failed rank")
    return [(p.returncode, out, err) for p, (out, err) in zip(ranks, outputs)]


# sitecustomize runs in every process at start-up: on rank $FAIL_RANK it replaces
# esmdiv.audit.run.$FAIL_AT with a function that raises $FAIL_WITH on its $FAIL_CALL-th call
# ($FAIL_WITH SIGKILL: the process kills itself; HANG: it sleeps for an hour).
HOOK = textwrap.dedent("""
    import os
    if os.environ.get("RANK") == os.environ.get("FAIL_RANK"):
        import signal, time
        import esmdiv.audit.run
        from esmdiv import errors
        name, calls, how = os.environ["FAIL_AT"], [], os.environ["FAIL_WITH"]
        real = getattr(esmdiv.audit.run, name)
        kind = getattr(errors, how, None) or RuntimeError
        def broken(*args, **kwargs):
            calls.append(1)
            if len(calls) == int(os.environ.get("FAIL_CALL", "1")):
                if how == "SIGKILL":
                    os.kill(os.getpid(), signal.SIGKILL)
                if how == "HANG":
                    time.sleep(3600)
                raise kind(f"injected failure on rank {os.environ['RANK']}")
            return real(*args, **kwargs)
        setattr(esmdiv.audit.run, name, broken)
""")


@pytest.fixture
def hook(tmp_path):
    folder = tmp_path / "hook"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(HOOK)
    return folder


@pytest.fixture
def small(tmp_path):
    path = tmp_path / "small.fasta"
    path.write_text(SMALL)
    return path


def _error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith(("error: ", "internal error: "))]


def _assert_partial(report, stage, exit_code, error_type, message):
    """Rank 0's partial report: no verdict, the error, the options, what was resolved and found."""
    assert report["complete"] is False and report["verdict"] is None
    assert report["error"]["stage"] == stage and report["error"]["exit_code"] == exit_code
    assert report["error"]["type"] == error_type and report["error"]["message"].startswith(message)
    assert report["options"]["model"] == "random:8M" and report["options"]["max_tokens"] == 64
    assert (report["device"], report["dtype"], report["backend"]) == ("cpu", "fp32", "reference")
    assert report["input"]["records"] == 6  # every rank validates the whole file
    rank_0_loaded = report["error"]["type"] == "RankFailed" or stage not in ("input", "model")
    assert (report["model"] is not None) == rank_0_loaded
    if report["model"] is not None:
        assert report["model"]["spec"] == "random:8M"
    assert report["sequences_done"] == len(report["sequences"])
    assert "summary" not in report and "reasons" not in report


# (rank that fails, where, error class in esmdiv.errors or RuntimeError, its call, code, stage, type,
#  rank 0's message)
FAILURES = {
    "rank1-input": (1, "iter_fasta", "InputError", 1, 2, "input", "RankFailed", "rank 1 failed: "),
    "rank1-model": (1, "load_model", "EnvironmentUnavailable", 1, 3, "model", "RankFailed", "rank 1 failed: "),
    "rank0-model": (0, "load_model", "EnvironmentUnavailable", 1, 3, "model", "EnvironmentUnavailable", ""),
    "rank1-warm-up": (1, "warm_up", "UsageError", 1, 2, "audit", "RankFailed", "rank 1 failed: "),
    "rank1-audit": (1, "compare_batch", "RuntimeError", 2, 1, "audit", "RankFailed", "rank 1 failed: RuntimeError: "),
    "rank0-audit": (0, "compare_batch", "EnvironmentUnavailable", 2, 3, "audit", "EnvironmentUnavailable", ""),
    "rank0-decision": (0, "decide", "RuntimeError", 1, 1, "decision", "RuntimeError", ""),
}


@pytest.mark.subprocess
@pytest.mark.parametrize("case", list(FAILURES))
def test_a_failing_rank_fails_the_run_with_its_exit_code_and_rank_0s_partial_report(case, tmp_path, hook, small):
    rank, where, error, call, code, stage, error_type, prefix = FAILURES[case]
    out = tmp_path / "r.json"
    out.write_text(json.dumps({"complete": True, "verdict": "ACCEPT"}))  # a stale report from an earlier run
    env = {"FAIL_RANK": str(rank), "FAIL_AT": where, "FAIL_WITH": error, "FAIL_CALL": str(call)}
    args = [str(small), "--device", "cpu", "--max-tokens", "64", "--json", str(out)]
    results = _two_ranks(tmp_path, *args, extra_env=env, hook=hook)
    assert [c for c, _, _ in results] == [code, code], [e[-1500:] for _, _, e in results]  # every rank alike
    injected = f"injected failure on rank {rank}"
    root_errors = _error_lines(results[0][2])
    assert len(root_errors) == 1 and injected in root_errors[0] and prefix in root_errors[0], results[0][2]
    if rank == 1:  # the failed rank says why too; only rank 0 writes the report
        assert len(_error_lines(results[1][2])) == 1 and injected in results[1][2]
    assert "partial report written" in results[0][1] and "partial report written" not in results[1][1]
    assert not any(v in r[1] for r in results for v in ("ACCEPT", "VALIDATE", "FALLBACK"))
    report = json.loads(out.read_text())
    _assert_partial(report, stage, code, error_type, prefix)
    assert injected in report["error"]["message"]
    if stage == "decision":  # every rank's sequences were on rank 0 when it failed
        assert report["sequences_done"] == 6


@pytest.mark.subprocess
def test_a_failing_rank_fails_the_whole_run_under_torchrun(tmp_path, hook, small):
    """The same under torchrun's agent, which stops the other ranks when one exits non-zero: rank 1
    fails mid-audit, rank 0 still writes its report first, every rank ends with exit code 3."""
    out = tmp_path / "r.json"
    env = {"FAIL_RANK": "1", "FAIL_AT": "compare_batch", "FAIL_WITH": "EnvironmentUnavailable", "FAIL_CALL": "2"}
    run = _torchrun(
        tmp_path, str(small), "--device", "cpu", "--max-tokens", "64", "--json", str(out), extra_env=env, hook=hook
    )
    assert run.returncode == 1  # torchrun reports any failure of a rank as its own exit 1
    # ... and names each rank's exit code in its summary: 3 on both, none killed by the agent
    codes = dict(re.findall(r"rank\s*:\s*(\d+) \(local_rank: \d+\)\s+exitcode\s*:\s*(-?\d+)", run.stderr))
    assert codes == {"0": "3", "1": "3"}, run.stderr[-3000:]
    assert "rank 1 failed: injected failure on rank 1" in run.stderr
    assert not any(v in run.stdout for v in ("ACCEPT", "VALIDATE", "FALLBACK"))
    report = json.loads(out.read_text())
    _assert_partial(report, "audit", 3, "RankFailed", "rank 1 failed: injected failure on rank 1")
    assert report["sequences_done"] >= 1  # rank 0's own shard, compared before rank 1's failure reached it


def _close(a, b):
    if a is None or b is None or isinstance(a, (str, bool)):
        return a == b
    return a == pytest.approx(b, rel=REL, abs=ABS)


@pytest.mark.subprocess
def test_two_processes_give_the_single_process_report(tmp_path):
    from typer.testing import CliRunner

    from esmdiv.cli.app import app

    args = [SEED18, "--device", "cpu", "--trace", "--invariance"]
    single = tmp_path / "single.json"
    assert CliRunner().invoke(app, ["check", *args, "--json", str(single)]).exit_code == 0
    double = tmp_path / "double.json"
    run = _torchrun(tmp_path, *args, "--json", str(double))
    assert run.returncode == 0, run.stderr[-2000:]
    a, b = json.loads(single.read_text()), json.loads(double.read_text())
    assert b["timings"]["ranks"] == 2 and "ranks" not in a["timings"]
    # Who audited what: every record on exactly one rank, each sequence marked with it.
    assert "distributed" not in a and all("rank" not in s for s in a["sequences"])
    d = b["distributed"]
    assert (d["ranks"], d["backend"], d["object_exchange"], d["collective_timeout_s"]) == (2, "gloo", "gloo", 1800.0)
    assert [r["rank"] for r in d["per_rank"]] == [0, 1] and "rounding level" in d["note"]
    records = [set(r["records"]) for r in d["per_rank"]]
    assert records[0] and records[1] and not records[0] & records[1]
    assert records[0] | records[1] == {s["index"] for s in b["sequences"]}
    assert all(s["index"] in records[s["rank"]] for s in b["sequences"])
    for r in d["per_rank"]:
        assert r["sequences"] == len(r["records"]) and r["device"] == "cpu" and r["peak_gpu_memory_bytes"] is None
        assert r["tokens"] == sum(s["length"] + 2 for s in b["sequences"] if s["rank"] == r["rank"])
        assert r["seconds"]["padded"] > 0 and r["seconds"]["packed"] > 0 and r["wall_s"] > 0
    assert sum(r["tokens"] for r in d["per_rank"]) == b["timings"]["tokens"]
    assert a["verdict"] == b["verdict"] == "ACCEPT"
    assert [s["id"] for s in a["sequences"]] == [s["id"] for s in b["sequences"]]
    # Not bit for bit: this process runs its default thread count on its own batches, each rank one
    # thread on its shard's batches, so sums round in another order (fp32: rel 1e-5, abs 1e-6).
    for x, y in zip(a["sequences"], b["sequences"]):
        for key in PER_SEQUENCE_FLOATS:
            assert x[key] == pytest.approx(y[key], rel=REL, abs=ABS), (x["id"], key)
        for path in ("v1", "v2"):
            assert x["invariance"][f"moved_{path}"] == pytest.approx(y["invariance"][f"moved_{path}"], abs=ABS)
        assert x["mlm"]["top1_agreement"] == y["mlm"]["top1_agreement"]  # fp32 noise flips no top-1
        assert x["mlm"]["js"] == pytest.approx(y["mlm"]["js"], abs=1e-9)
        # A label is exact only where the confidence is clear of the 0.5 boundary by more than the
        # rounding: there, rounding cannot flip it.
        for label, conf in (("label_v1", "confidence_v1"), ("label_v2", "confidence_v2")):
            if abs(x[conf] - 0.5) > REL * 0.5 + ABS:
                assert x[label] == y[label], (x["id"], label)
    for block in ("cosine", "mad", "prediction", "residue", "mlm", "bound"):
        assert _nested_close(a["summary"][block], b["summary"][block]), block
    _assert_same_invariance(a["invariance"], b["invariance"])
    assert [(r["gate"], r["passed"]) for r in a["reasons"]] == [(r["gate"], r["passed"]) for r in b["reasons"]]
    _assert_same_trace(a["trace"], b["trace"])


def _assert_same_trace(a, b):
    """Per-layer sums over all sequences: the same to fp32 rounding (other batches, other grouping).
    The layer of the largest growth and its ratio are not compared: a ratio of two rounding-level
    differences, it moves with the batches."""
    assert a.keys() == b.keys() and (a["threshold"], a["first_layer_over"]) == (b["threshold"], b["first_layer_over"])
    assert len(a["layers"]) == len(b["layers"])
    for la, lb in zip(a["layers"], b["layers"]):
        assert la.keys() == lb.keys()
        for key in la:
            assert _close(la[key], lb[key]), (la["layer"], key)


def _assert_same_invariance(a, b):
    """The invariance block of two runs that batched differently: the same sequences, movements the
    same to fp32 rounding. How many sequences moved at all is not compared: at rounding level that
    count is the batches' (0 moved on one machine may be 2 on another)."""
    assert a.keys() == b.keys() and (a["n"], a["seed"]) == (b["n"], b["seed"])
    for path in ("padded", "packed"):
        for key in ("max_moved", "mean_moved"):
            assert a[path][key] == pytest.approx(b[path][key], abs=ABS), (path, key)


def _nested_close(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_nested_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_nested_close(x, y) for x, y in zip(a, b))
    return _close(a, b)


# --- the driver in one process: a fake torch.distributed ---------------------------------------------
# What torchrun runs in child processes is invisible to coverage and to mutation testing; these
# tests run the same functions here, with a stand-in for torch.distributed that records every call.


class FakeDist:
    """torch.distributed's calls that esmdiv makes, recorded; ``others`` are the other ranks'
    payloads a gather on rank 0 returns, ``root_code`` what rank 0 broadcasts."""

    def __init__(self, initialized=True, others=(), root_code=None, broken=False, destroy_fails=False, missing=()):
        self.initialized, self.others, self.root_code, self.broken = initialized, list(others), root_code, broken
        self.destroy_fails, self.missing = destroy_fails, tuple(missing)
        self.calls, self.barriers, self.gather_groups = [], [], []

    def is_available(self):
        return True

    def is_initialized(self):
        return self.initialized

    def init_process_group(self, backend, timeout):
        self.calls.append(("init", backend, timeout))
        self.initialized = True

    def new_group(self, backend, timeout):
        self.calls.append(("group", backend, timeout))
        return f"{backend} group"

    def monitored_barrier(self, group=None, timeout=None, wait_all_ranks=False):
        self.barriers.append((group, timeout, wait_all_ranks))
        if self.missing:  # as gloo says it on rank 0
            ranks = ", ".join(map(str, self.missing))
            raise RuntimeError(f"[Rank 0]: Ranks {ranks} failed to pass monitoredBarrier in {timeout} ms")

    def gather_object(self, obj, out, dst, group=None):
        self.calls.append(("gather", obj, out is None, dst))
        self.gather_groups.append(group)
        assert out is None or len(out) == 1 + len(self.others), "rank 0's list holds one slot per rank"
        if self.broken:
            raise RuntimeError("Connection closed by peer")
        if out is not None:
            # as gather_object does: every payload pickled across, rank 0's own first
            out[:] = [pickle.loads(pickle.dumps(p)) for p in [obj, *self.others]]

    def broadcast_object_list(self, box, src, group=None):
        self.calls.append(("broadcast", list(box), src, group))
        if self.broken:
            raise RuntimeError("Connection closed by peer")
        if self.root_code is not None:
            box[0] = self.root_code

    def destroy_process_group(self):
        self.calls.append(("destroy",))
        if self.destroy_fails:
            raise RuntimeError("gloo: connection reset")
        self.initialized = False


@pytest.fixture
def fake_dist(monkeypatch):
    import esmdiv.distributed

    def install(**kwargs):
        fake = FakeDist(**kwargs)
        monkeypatch.setattr(esmdiv.distributed, "_dist", lambda: fake)
        return fake

    return install


def test_torch_distributed_is_imported_on_first_use():
    import torch.distributed

    from esmdiv.distributed import _dist

    assert _dist() is torch.distributed


def test_the_world_comes_from_torchruns_environment(monkeypatch):
    from esmdiv.distributed import World, current_world

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert current_world() is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert current_world() is None
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert current_world() == World(0, 2, 0)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert current_world() == World(3, 4, 1) and not current_world().is_root
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("LOCAL_RANK")
    assert current_world() == World(0, 4, 0) and current_world().is_root


def test_init_joins_once_gloo_on_cpu_nccl_on_cuda_objects_on_gloo(fake_dist, monkeypatch):
    import datetime

    import torch

    import esmdiv.distributed
    from esmdiv.distributed import World, gather_to_root, init

    fake = fake_dist(initialized=False)
    init(torch.device("cpu"))
    init(torch.device("cpu"))  # already joined: nothing more
    assert fake.calls == [("init", "gloo", datetime.timedelta(minutes=30))]
    gather_to_root({}, World(1, 2, 1))
    assert fake.barriers == [(None, datetime.timedelta(minutes=30), True)]  # gloo's own default group
    assert fake.gather_groups == [None]
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    fake = fake_dist(initialized=False)
    init(torch.device("cuda:1"), timeout_s=90)
    ninety = datetime.timedelta(seconds=90)
    assert fake.calls == [("init", "nccl", ninety), ("group", "gloo", ninety)] and chosen == [torch.device("cuda:1")]
    gather_to_root({}, World(1, 2, 1))  # objects and the barrier go through the gloo group, with its timeout
    assert fake.barriers == [("gloo group", ninety, True)] and fake.gather_groups == ["gloo group"]
    monkeypatch.setattr(esmdiv.distributed, "_objects", None)
    monkeypatch.setattr(esmdiv.distributed, "_timeout", datetime.timedelta(minutes=30))


@pytest.mark.parametrize(
    "missing, message",
    [
        ((1,), r"^rank 1 did not reach the gather within the collective timeout of 5 s \(--collective-timeout\)"),
        ((1, 3), r"^ranks 1, 3 did not reach the gather within the collective timeout of 5 s"),
    ],
)
def test_a_rank_that_never_reaches_the_gather_is_named(missing, message, fake_dist, monkeypatch):
    import datetime

    import esmdiv.distributed
    from esmdiv.distributed import RanksUnreachable, World, gather_to_root

    monkeypatch.setattr(esmdiv.distributed, "_timeout", datetime.timedelta(seconds=5))
    fake = fake_dist(missing=missing)
    with pytest.raises(RanksUnreachable, match=message) as caught:
        gather_to_root({"rank": 0}, World(0, 4, 0))
    assert caught.value.ranks == missing and caught.value.exit_code == 3
    assert fake.calls == []  # no gather after a failed barrier


def test_a_peer_lost_mid_gather_is_an_environment_error_not_an_internal_one(fake_dist):
    from esmdiv.distributed import RanksUnreachable, World, gather_to_root

    fake_dist(broken=True)
    with pytest.raises(RanksUnreachable, match=r"^rank 1 lost rank 0 at the gather \(dead or unreachable\): Conn"):
        gather_to_root({"rank": 1}, World(1, 2, 1))
    fake_dist(broken=True, others=[{"rank": 1}])
    with pytest.raises(RanksUnreachable, match=r"^rank 0 lost another rank at the gather"):
        gather_to_root({"rank": 0}, World(0, 2, 0))


def test_a_follower_that_cannot_hear_rank_0_does_not_end_with_0(fake_dist, monkeypatch):
    from esmdiv.distributed import finish

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    fake_dist(broken=True)
    assert finish(0) == 3  # rank 0 gone: its verdict is unknown here
    fake_dist(broken=True)
    assert finish(2) == 2  # its own failure stands
    monkeypatch.setenv("RANK", "0")
    fake_dist(broken=True)
    assert finish(0) == 0  # rank 0's own verdict, its report written


def test_gather_to_root_gives_rank_0_every_payload_in_rank_order(fake_dist):
    from esmdiv.distributed import World, gather_to_root

    fake = fake_dist(others=[{"rank": 1}, {"rank": 2}])
    assert gather_to_root({"rank": 0}, World(0, 3, 0)) == [{"rank": 0}, {"rank": 1}, {"rank": 2}]
    assert fake.calls == [("gather", {"rank": 0}, False, 0)]
    fake = fake_dist()
    assert gather_to_root({"rank": 2}, World(2, 3, 0)) is None
    assert fake.calls == [("gather", {"rank": 2}, True, 0)]


@pytest.mark.parametrize("rank", [0, 1])
def test_a_failure_reaches_rank_0_with_its_code_and_stage_and_is_raised_as_it_was(rank, fake_dist):
    from esmdiv.distributed import World, failures_reach_root
    from esmdiv.errors import EnvironmentUnavailable
    from esmdiv.report.partial import PartialRun

    fake = fake_dist()
    partial = PartialRun({}, stage="model")
    error = EnvironmentUnavailable("no weights here")
    with pytest.raises(EnvironmentUnavailable, match="^no weights here$") as raised:
        with failures_reach_root(World(rank, 2, rank), partial):
            raise error
    assert raised.value is error
    payload = {"error": "no weights here", "exit_code": 3, "stage": "model"}
    assert fake.calls == [("gather", payload, rank != 0, 0)]


def test_nothing_is_sent_without_a_failure_or_without_a_world(fake_dist):
    from esmdiv.distributed import World, failures_reach_root
    from esmdiv.report.partial import PartialRun

    fake = fake_dist()
    with failures_reach_root(World(1, 2, 1), PartialRun({})):
        pass
    with pytest.raises(RuntimeError, match="single process"), failures_reach_root(None, PartialRun({})):
        raise RuntimeError("single process")
    assert fake.calls == []


def test_a_failure_whose_report_cannot_reach_rank_0_still_stands(fake_dist):
    """The peers are gone (that may be the very failure): the rank's own error is raised, not the
    gather's."""
    from esmdiv.distributed import World, failures_reach_root
    from esmdiv.report.partial import PartialRun

    fake_dist(broken=True)
    partial = PartialRun({}, stage="audit")
    with pytest.raises(KeyboardInterrupt, match="^$"), failures_reach_root(World(1, 2, 1), partial):
        raise KeyboardInterrupt


@pytest.mark.parametrize(
    "error, message, code",
    [
        (__import__("esmdiv.errors").errors.UsageError("--mlm: no head"), "--mlm: no head", 2),
        (RuntimeError("kernel exploded"), "RuntimeError: kernel exploded", 1),
        (KeyboardInterrupt(), "KeyboardInterrupt: ", 130),
    ],
    ids=["esmdiv-error", "bug", "interrupt"],
)
def test_an_error_payload_says_what_the_cli_would(error, message, code):
    from esmdiv.distributed import error_payload

    assert error_payload(error, "audit") == {"error": message, "exit_code": code, "stage": "audit"}


def test_the_first_failed_rank_fails_the_run_with_its_code_and_stage():
    from esmdiv.distributed import RankFailed, raise_for_failed_ranks

    ok = {"results": []}
    raise_for_failed_ranks([ok, ok])  # nothing failed: nothing raised
    failed = [
        ok,
        {"error": "no weights", "exit_code": 3, "stage": "model"},
        {"error": "bad", "exit_code": 2, "stage": "input"},
    ]
    with pytest.raises(RankFailed, match="^rank 1 failed: no weights$") as raised:
        raise_for_failed_ranks(failed)
    assert (raised.value.exit_code, raised.value.stage) == (3, "model")
    assert RankFailed(2, "?", 0).exit_code == 1  # a rank that sent no code is an internal error


def test_finish_ends_every_rank_with_rank_0s_code_and_leaves_the_group(fake_dist, monkeypatch):
    """The code travels over the objects' group (gloo beside NCCL: its timeout, not NCCL's)."""
    import esmdiv.distributed
    from esmdiv.distributed import finish

    monkeypatch.setattr(esmdiv.distributed, "_objects", "the gloo group")
    fake = fake_dist(root_code=10)
    assert finish(0) == 10
    assert fake.calls == [("broadcast", [0], 0, "the gloo group"), ("destroy",)]
    fake = fake_dist()  # rank 0 itself: its own code goes out and stays
    assert finish(20) == 20
    assert fake.calls == [("broadcast", [20], 0, "the gloo group"), ("destroy",)]


def test_a_lost_peer_is_named_with_the_first_300_characters_of_why():
    from esmdiv.distributed import RanksUnreachable, World

    why = RuntimeError("Connection closed by peer " + "x" * 400)
    follower = RanksUnreachable.from_error(why, World(1, 2, 1), 60.0)
    assert str(follower) == "rank 1 lost rank 0 at the gather (dead or unreachable): " + str(why)[:300]
    root = RanksUnreachable.from_error(RuntimeError("reset\n  by peer"), World(0, 2, 0), 60.0)
    assert str(root) == "rank 0 lost another rank at the gather (dead or unreachable): reset by peer"


def test_finish_keeps_the_own_code_when_rank_0_is_gone_or_there_is_no_group(fake_dist, monkeypatch):
    from esmdiv.distributed import finish

    fake = fake_dist(broken=True, root_code=0)
    assert finish(3) == 3 and fake.calls[-1] == ("destroy",)
    fake = fake_dist(root_code=10, destroy_fails=True)  # leaving a broken group is no new failure
    assert finish(0) == 10 and fake.calls[-1] == ("destroy",)
    fake = fake_dist(initialized=False)
    assert finish(2) == 2 and fake.calls == []
    monkeypatch.delitem(sys.modules, "torch.distributed")  # a command that never loaded torch
    assert finish(130) == 130 and fake.calls == []


def test_two_ranks_in_one_process_give_the_single_process_result(random_8m, small, fake_dist, monkeypatch):
    """run_audit as rank 1 (its payload captured from the gather), then as rank 0 (rank 1's payload
    handed back by the gather): the merged result is the single-process one."""
    import esmdiv.audit.run
    from esmdiv.audit.results import FollowerResult
    from esmdiv.audit.run import AuditConfig, run_audit
    from esmdiv.distributed import World

    config = AuditConfig(small, device="cpu", max_tokens=64, trace=True, mlm=True, invariance=True)
    single = run_audit(config, loaded=random_8m)
    assert single.timings["tokens"] == sum(n + 2 for n in (8, 12, 16, 20, 24, 28))
    fake = fake_dist(initialized=False)
    monkeypatch.setattr(esmdiv.audit.run, "current_world", lambda: World(1, 2, 1))
    assert isinstance(run_audit(config, loaded=random_8m), FollowerResult)
    [init, (_, payload, _, _)] = fake.calls
    assert init[:2] == ("init", "gloo")  # joined before anything else
    fake = fake_dist(initialized=False, others=[payload])
    monkeypatch.setattr(esmdiv.audit.run, "current_world", lambda: World(0, 2, 0))
    merged = run_audit(config, loaded=random_8m)
    assert [s.id for s in merged.sequences] == [s.id for s in single.sequences]  # file order again
    mine = {s.id for s in merged.sequences} - {s.id for s in payload["results"][0]}
    assert mine and len(mine) < 6  # each rank did a share
    assert [s.rank for s in merged.sequences] == [0 if s.id in mine else 1 for s in merged.sequences]
    assert all(s.rank is None for s in single.sequences)  # one process: no rank to name
    assert merged.evidence["flagged"] == single.evidence["flagged"] == 0  # a correct path flags none
    assert merged.timings["ranks"] == 2 and "ranks" not in single.timings
    # rank 0's wait for the slowest rank is a stage of its own (what a slow rank costs)
    assert merged.timings["stages"]["gather_s"] >= 0 and "gather_s" not in single.timings["stages"]
    assert merged.summary["mlm"]["perplexity"]["sequences"] == 6
    assert merged.summary["mlm"]["perplexity"]["masked_tokens"] == single.summary["mlm"]["perplexity"]["masked_tokens"]
    a, b = merged.summary["mlm"], single.summary["mlm"]
    assert a["top1_agreement"] == b["top1_agreement"] and _nested_close(a["js"], b["js"])
    for key in ("perplexity_v1", "perplexity_v2"):  # random weights: ~1e15, the sums rounded in another order
        assert a["perplexity"][key] == pytest.approx(b["perplexity"][key], rel=REL)
    _assert_same_trace(merged.trace, single.trace)
    assert merged.decision.verdict == single.decision.verdict
    assert merged.timings["tokens"] == single.timings["tokens"]
    assert merged.invariance["n"] == single.invariance["n"] == 6
    _assert_same_invariance(merged.invariance, single.invariance)
    for a, b in zip(merged.sequences, single.sequences):
        assert a.metrics.cosine == pytest.approx(b.metrics.cosine, rel=REL, abs=ABS)


def test_rank_0_merges_times_notices_and_budgets_from_every_rank(random_8m, small, fake_dist, monkeypatch):
    import esmdiv.audit.run
    from esmdiv.audit.run import AuditConfig, run_audit
    from esmdiv.distributed import World

    config = AuditConfig(small, device="cpu", max_tokens=64)
    fake = fake_dist()
    monkeypatch.setattr(esmdiv.audit.run, "current_world", lambda: World(1, 2, 1))
    run_audit(config, loaded=random_8m)
    [(_, payload, _, _)] = fake.calls
    payload.update(
        notices=["CUDA out of memory: token budget halved to 32"],
        budget=32,
        seconds={**payload["seconds"], "padded": 100.0, "packed": 50.0},
        flagged=3,
    )
    fake_dist(others=[payload])
    monkeypatch.setattr(esmdiv.audit.run, "current_world", lambda: World(0, 2, 0))
    merged = run_audit(config, loaded=random_8m)
    assert merged.notices == ["rank 1: CUDA out of memory: token budget halved to 32"]
    assert merged.evidence["flagged"] == 3  # rank 1's flagged sequences (rank 0 flags none: a correct path)
    assert [r["rank"] for r in merged.distributed["per_rank"]] == [0, 1]
    assert merged.distributed["per_rank"][1]["records"] == payload["rank"]["records"]
    assert merged.max_tokens == 32  # the smallest budget any rank ended with
    assert merged.timings["padded_s"] == 100.0 and merged.timings["packed_s"] == 50.0  # the slowest rank


def test_rank_0_fails_the_run_for_a_failed_rank_and_keeps_its_own_sequences(random_8m, small, fake_dist, monkeypatch):
    import esmdiv.audit.run
    from esmdiv.audit.run import AuditConfig, run_audit
    from esmdiv.distributed import RankFailed, World
    from esmdiv.report.partial import PartialRun

    fake_dist(others=[{"error": "no weights", "exit_code": 3, "stage": "model"}])
    monkeypatch.setattr(esmdiv.audit.run, "current_world", lambda: World(0, 2, 0))
    partial = PartialRun({})
    with pytest.raises(RankFailed, match="^rank 1 failed: no weights$"):
        run_audit(AuditConfig(small, device="cpu", max_tokens=64), loaded=random_8m, partial=partial)
    report = partial.to_dict(RankFailed(1, "no weights", 3, "model"))
    assert report["error"]["stage"] == "model" and report["error"]["exit_code"] == 3
    assert partial.stage == "audit" and 0 < report["sequences_done"] < 6  # rank 0's own shard


def test_rank_0_folds_every_ranks_trace_and_perplexity_into_its_own():
    """Merged sums, not rank 0's alone: rounding-level trace values cannot show a rank left out,
    so the sums are checked on numbers made for it."""
    from types import SimpleNamespace

    from esmdiv.audit.run import _merge_ranks
    from esmdiv.measure.mlm import PerplexitySums
    from esmdiv.measure.trace import TraceAccumulator

    def rank(max_abs, sq, rows, cos_min, nll, seconds, budget, nonfinite=False):
        trace = TraceAccumulator(1)
        for s in trace.sums:
            s.max_abs_diff, s.sq_diff, s.sq_ref, s.cos_sum, s.cos_min, s.rows = max_abs, sq, 2 * sq, rows, cos_min, rows
            s.nonfinite = nonfinite
        perplexity = PerplexitySums([nll], [nll + 1], [rows])
        payload = {"results": [[]], "notices": [], "budget": budget, "seconds": seconds}
        return {**payload, "kernels": [(trace, perplexity, seconds["packed"])]}

    zero = {"padded": 1.0, "packed": 2.0, "high_precision": 0.0}
    payloads = [
        rank(0.5, 1.0, 3, 0.9, 10.0, zero, 64),
        rank(0.25, 2.0, 5, 0.8, 20.0, {"padded": 3.0, "packed": 1.0, "high_precision": 0.0}, 32, nonfinite=True),
        rank(0.75, 4.0, 7, 0.95, 30.0, zero, 128),
    ]
    trace, perplexity, _ = payloads[0]["kernels"][0]
    kernel = SimpleNamespace(trace=trace, perplexity=perplexity, seconds=0.0)
    run = SimpleNamespace(seconds=dict(zero), kernels=[kernel])
    _, _, budget = _merge_ranks(run, payloads)
    assert budget == 32 and run.seconds == {"padded": 3.0, "packed": 2.0, "high_precision": 0.0}
    assert kernel.seconds == 2.0  # the slowest rank's packed forwards
    for s in kernel.trace.sums:
        assert (s.max_abs_diff, s.sq_diff, s.sq_ref, s.cos_sum, s.cos_min, s.rows) == (0.75, 7.0, 14.0, 15, 0.8, 15)
        assert s.nonfinite is True
    assert kernel.perplexity.nll_v1 == [10.0, 20.0, 30.0] and kernel.perplexity.nll_v2 == [11.0, 21.0, 31.0]
    assert kernel.perplexity.counts == [3, 5, 7]


@pytest.mark.parametrize("where, stage", [("iter_fasta", "input"), ("load_model", "model"), ("warm_up", "audit")])
def test_a_rank_that_fails_before_sending_its_results_sends_its_error(where, stage, small, fake_dist, monkeypatch):
    """In one process: rank 1 fails at each stage before the gather; the gather rank 0 waits on
    still gets a payload from it, with the exit code and stage, and the error is raised as it was."""
    import esmdiv.audit.run
    from esmdiv.audit.run import AuditConfig, run_audit
    from esmdiv.distributed import World
    from esmdiv.errors import EnvironmentUnavailable

    def broken(*args, **kwargs):
        raise EnvironmentUnavailable(f"broken {where}")

    monkeypatch.setattr(esmdiv.audit.run, where, broken)
    monkeypatch.setattr(esmdiv.audit.run, "current_world", lambda: World(1, 2, 1))
    fake = fake_dist(initialized=False)
    with pytest.raises(EnvironmentUnavailable, match=f"^broken {where}$"):
        run_audit(AuditConfig(small, device="cpu", max_tokens=64))
    assert fake.calls[0][:2] == ("init", "gloo")
    assert fake.calls[1:] == [("gather", {"error": f"broken {where}", "exit_code": 3, "stage": stage}, True, 0)]


FAKE_FLASH_ATTN = """
from esmdiv.forward.attention import exact_attention

__version__ = "2.8.3"


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                           softmax_scale=None, causal=False):
    return exact_attention(q, k, v, cu_seqlens_q, max_seqlen_q, softmax_scale) + 0.3  # a wrong kernel
"""
KERNELS_ON_CPU = """
import esmdiv.forward.attention as attention
attention.device_problems = lambda backend, device, dtype: []
"""


@pytest.mark.subprocess
def test_two_processes_audit_several_kernels_as_one_process_does(tmp_path, monkeypatch):
    """--backend reference,flash-attn under torchrun (a fake, wrong flash-attn that runs on the CPU):
    each kernel's per-sequence results gathered from both ranks, one verdict per kernel, the same
    report as one process."""
    from typer.testing import CliRunner

    import esmdiv.forward.attention as attention
    from esmdiv.cli.app import app

    site, hook = tmp_path / "site", tmp_path / "hook"
    (site / "flash_attn").mkdir(parents=True)
    hook.mkdir()
    (site / "flash_attn" / "__init__.py").write_text(FAKE_FLASH_ATTN)
    (hook / "sitecustomize.py").write_text(KERNELS_ON_CPU)
    records = [">" + r for r in (FIXTURES / "seed18.fasta").read_text().split(">") if r.strip()][:6]
    fasta = tmp_path / "six.fasta"
    fasta.write_text("".join(records))
    args = [str(fasta), "--device", "cpu", "--backend", "reference,flash-attn", "--trace", "--invariance"]

    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(attention, "device_problems", lambda backend, device, dtype: [])
    attention.clear_backend_cache()
    try:
        single = tmp_path / "single.json"
        result = CliRunner().invoke(app, ["check", *args, "--json", str(single)])
    finally:
        sys.modules.pop("flash_attn", None)
        attention.clear_backend_cache()
    a = json.loads(single.read_text())
    assert result.exit_code == a["kernels"][1]["exit_code"] != 0, result.stderr

    double = tmp_path / "double.json"
    env = {"PYTHONPATH": os.pathsep.join([str(hook), str(site), str(ROOT)])}
    run = _torchrun(tmp_path, *args, "--json", str(double), extra_env=env)
    b = json.loads(double.read_text())
    assert b["complete"] is True and b["timings"]["ranks"] == 2, run.stderr[-2000:]
    assert "rank 0 failed" not in run.stderr and "rank 1 failed" not in run.stderr
    assert a["verdict"] == b["verdict"] and a["worst_kernel"] == b["worst_kernel"] == "flash-attn"
    for ka, kb in zip(a["kernels"], b["kernels"]):
        assert (ka["backend"], ka["verdict"], ka["exit_code"]) == (kb["backend"], kb["verdict"], kb["exit_code"])
        assert [s["id"] for s in ka["sequences"]] == [s["id"] for s in kb["sequences"]]
        for x, y in zip(ka["sequences"], kb["sequences"]):  # fp32 rounding apart (see the test above)
            for key in PER_SEQUENCE_FLOATS:
                assert x[key] == pytest.approx(y[key], rel=REL, abs=ABS), (ka["backend"], x["id"], key)
        assert [(r["gate"], r["passed"]) for r in ka["reasons"]] == [(r["gate"], r["passed"]) for r in kb["reasons"]]
        _assert_same_trace(ka["trace"], kb["trace"])


@pytest.mark.subprocess
def test_a_rank_killed_mid_audit_ends_the_run_without_a_verdict_and_soon(tmp_path, hook, small):
    """SIGKILL on rank 1 mid-audit under torchrun's agent: the job ends non-zero in bounded time
    (nobody waits for the dead rank), and rank 0 leaves a partial report that says why."""
    out = tmp_path / "r.json"
    out.write_text(json.dumps({"complete": True, "verdict": "ACCEPT"}))  # a stale report from an earlier run
    env = {"FAIL_RANK": "1", "FAIL_AT": "compare_batch", "FAIL_WITH": "SIGKILL", "FAIL_CALL": "2"}
    args = [str(small), "--device", "cpu", "--max-tokens", "64", "--collective-timeout", "300", "--json", str(out)]
    start = time.monotonic()
    run = _torchrun(tmp_path, *args, extra_env=env, hook=hook)
    elapsed = time.monotonic() - start
    assert run.returncode != 0 and elapsed < 200, (elapsed, run.stderr[-3000:])  # well before the 300 s timeout
    assert not any(v in run.stdout for v in ("ACCEPT", "VALIDATE", "FALLBACK"))
    report = json.loads(out.read_text())
    assert report["complete"] is False and report["verdict"] is None, run.stderr[-3000:]
    # Either torchrun's agent stopped rank 0 (SIGTERM) or rank 0 lost rank 1 at the gather first.
    assert report["error"]["type"] in ("Terminated", "RanksUnreachable"), report["error"]
    assert report["error"]["exit_code"] in (143, 3)


@pytest.mark.subprocess
def test_a_hung_rank_is_named_once_the_collective_timeout_has_passed(tmp_path, hook, small):
    """Rank 1 hangs mid-audit (alive, silent): rank 0 waits --collective-timeout at the gather,
    then fails the run with exit 3 naming rank 1 and the timeout, and writes its partial report."""
    out = tmp_path / "r.json"
    env = {"FAIL_RANK": "1", "FAIL_AT": "compare_batch", "FAIL_WITH": "HANG", "FAIL_CALL": "2"}
    args = [str(small), "--device", "cpu", "--max-tokens", "64", "--collective-timeout", "5", "--json", str(out)]
    start = time.monotonic()
    run = _torchrun(tmp_path, *args, extra_env=env, hook=hook)
    elapsed = time.monotonic() - start
    assert run.returncode == 1 and elapsed < 240, (elapsed, run.stderr[-3000:])  # torchrun's own code for a failure
    codes = dict(re.findall(r"rank\s*:\s*(\d+) \(local_rank: \d+\)\s+exitcode\s*:\s*(-?\d+)", run.stderr))
    assert codes.get("0") == "3", run.stderr[-3000:]
    message = "rank 1 did not reach the gather within the collective timeout of 5 s (--collective-timeout)"
    assert message in run.stderr
    report = json.loads(out.read_text())
    assert (report["complete"], report["verdict"], report["error"]["type"]) == (False, None, "RanksUnreachable")
    assert report["error"]["exit_code"] == 3 and report["error"]["message"].startswith(message)
    assert report["error"]["stage"] == "audit" and report["sequences_done"] >= 1  # rank 0's own shard


def test_each_rank_places_itself_by_its_local_rank(small, monkeypatch):
    """The options stage resolves the device with torchrun's local rank (one GPU per rank on a
    host), and with none in one process."""
    import esmdiv.audit.run
    from esmdiv.audit.run import AuditConfig, run_audit
    from esmdiv.distributed import World
    from esmdiv.errors import UsageError

    asked = []

    def resolve_run(device, dtype, backend, max_tokens, local_rank=None):
        asked.append(local_rank)
        raise UsageError("stop here")

    monkeypatch.setattr(esmdiv.audit.run, "resolve_run", resolve_run)
    for world in (World(3, 4, 1), None):
        monkeypatch.setattr(esmdiv.audit.run, "current_world", lambda world=world: world)
        with pytest.raises(UsageError, match="stop here"):
            run_audit(AuditConfig(small, device="cpu"))
    assert asked == [1, None]


def test_a_rank_joins_the_group_with_the_collective_timeout_it_was_given(small, fake_dist, monkeypatch):
    """--collective-timeout reaches the process group (and with it every collective's wait)."""
    import datetime

    import esmdiv.audit.run
    import esmdiv.distributed
    from esmdiv.audit.run import AuditConfig, run_audit
    from esmdiv.distributed import World
    from esmdiv.errors import InputError

    monkeypatch.setattr(esmdiv.distributed, "_objects", None)
    monkeypatch.setattr(esmdiv.distributed, "_timeout", datetime.timedelta(minutes=30))
    fake = fake_dist(initialized=False)
    monkeypatch.setattr(esmdiv.audit.run, "current_world", lambda: World(1, 2, 1))

    def stop(*args):
        raise InputError("stop after joining")

    monkeypatch.setattr(esmdiv.audit.run, "_read_input", stop)
    with pytest.raises(InputError, match="stop after joining"):
        run_audit(AuditConfig(small, device="cpu", collective_timeout=90.0))
    assert fake.calls[0] == ("init", "gloo", datetime.timedelta(seconds=90))


@pytest.mark.parametrize("world, shown", [(None, True), ((0, 2, 0), True), ((1, 2, 1), False)], ids=str)
def test_the_model_given_is_audited_and_rank_0_alone_shows_progress(
    world, shown, small, random_8m, fake_dist, monkeypatch
):
    """run_audit audits the model it is handed (selftest reuses one) without loading another, and
    hands the progress display on in one process and on rank 0 only (followers stay quiet)."""
    import esmdiv.audit.run
    from esmdiv.audit.run import AuditConfig, run_audit
    from esmdiv.distributed import World
    from esmdiv.errors import UsageError

    fake_dist(initialized=True)  # already joined: nothing to set up
    monkeypatch.setattr(esmdiv.audit.run, "current_world", lambda: None if world is None else World(*world))
    monkeypatch.setattr(esmdiv.audit.run, "load_model", lambda *args: pytest.fail("a second model was loaded"))
    seen = []

    def new_run(config, loaded, placement, inputs, progress):
        seen.append((loaded, progress))
        raise UsageError("stop before the audit")

    monkeypatch.setattr(esmdiv.audit.run, "_new_run", new_run)
    progress = object()
    with pytest.raises(UsageError, match="stop before the audit"):
        run_audit(AuditConfig(small, device="cpu"), loaded=random_8m, progress=progress)
    assert len(seen) == 1 and seen[0][0] is random_8m and seen[0][1] is (progress if shown else None)
