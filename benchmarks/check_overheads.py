"""What the fixed costs of ``esmdiv check`` are made of (issue 14, goal 2), one piece at a time.

    python benchmarks/check_overheads.py --model random:3B --out $OUT

In a fresh process, in the order a check meets them, each timed to a device synchronisation:
importing torch, creating the CUDA context, building the model, then the warm-up's pieces (the
first fp16 GEMM, the attention kernel's first call on a tiny input, the first padded forward of a
one-sequence batch, the first packed forward, and the same two again, warm), then the evidence
pass's fp32 pieces on a sample of ``--sample-tokens`` tokens of lognormal lengths: the fp32 model
copy and the position probe's packs: the sample alone and the sample twice,
:data:`~esmdiv.audit.evidence.PROBE_OFFSET` positions apart (the probe since run 22), and, for a
baseline in the same process, the two packs the probe ran before (the sample in front of
``PROBE_OFFSET`` filler tokens, behind them). Prints a table and writes ``check-overheads.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

T0 = time.perf_counter()
import torch  # noqa: E402 - its import is the first thing timed

IMPORT_S = time.perf_counter() - T0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="random:3B")
    parser.add_argument("--sample-tokens", type=int, default=4096)
    parser.add_argument("--out", type=Path, default=Path("out"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    from esmdiv.audit.evidence import PROBE_OFFSET, filler_tokens
    from esmdiv.forward.attention import resolve_backend, varlen_attention
    from esmdiv.forward.high_precision import build_high_precision
    from esmdiv.forward.packed import packed_forward
    from esmdiv.forward.packing import encode, pack, pad
    from esmdiv.forward.padded import padded_forward
    from esmdiv.input.workloads import lognormal_workload
    from esmdiv.model.loading import load_model

    device = torch.device("cuda")
    times: dict[str, float] = {"import torch": IMPORT_S}

    def timed(name, fn):
        start = time.perf_counter()
        out = fn()
        torch.cuda.synchronize(device)
        times[name] = time.perf_counter() - start
        return out

    timed("CUDA context", lambda: torch.zeros(1, device=device))
    loaded = timed("model build", lambda: load_model(args.model, device, torch.float16))
    model, alphabet = loaded.model, loaded.alphabet
    a = torch.randn(64, model.embed_dim, device=device, dtype=torch.float16)
    timed("first fp16 GEMM", lambda: a @ a.T)
    backend = resolve_backend("auto", device, torch.float16)
    one = [encode("MKTAYIAKVL", alphabet)]
    padded, packed = pad(one, alphabet.padding_idx).to(device), pack(one).to(device)
    q = torch.randn(12, 2, 64, device=device, dtype=torch.float16)
    cu = torch.tensor([0, 12], device=device, dtype=torch.int32)
    timed(f"first attention call ({backend}, tiny)", lambda: varlen_attention(q, q, q, cu, 12, backend, scale=0.125))
    for label in ("first", "second"):
        timed(f"{label} padded forward (1 sequence)", lambda: padded_forward(model, padded))
        timed(f"{label} packed forward (1 sequence)", lambda: packed_forward(model, packed, backend))

    sample, used = [], 0
    for s in lognormal_workload(1000, seed=0):
        if used + len(s.sequence) + 2 > args.sample_tokens:
            continue
        sample.append(encode(s.sequence, alphabet))
        used += len(s.sequence) + 2
    high = timed("fp32 model copy", lambda: build_high_precision(model, device))
    filler, between = filler_tokens(alphabet, PROBE_OFFSET), filler_tokens(alphabet, PROBE_OFFSET - used)
    probes = {
        "alone": sample,
        "twice": sample + between + sample,
        "in front (before run 22)": sample + filler,
        "behind (before run 22)": filler + sample,
    }
    for name, tokens in probes.items():
        probe = pack(tokens).to(device)
        label = f"probe pack {name} ({len(probe.input_ids)} fp32 tokens)"
        timed(label, lambda p=probe: packed_forward(high, p, "reference"))

    width = max(len(n) for n in times)
    for name, seconds in times.items():
        print(f"{name:<{width}}  {seconds:8.3f} s")
    record = {
        "model": args.model,
        "device": torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "sample_tokens": used,
        "seconds": times,
    }
    (args.out / "check-overheads.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
