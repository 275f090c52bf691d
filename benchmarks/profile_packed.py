"""Where does the time of each path go? Times both paths on the lognormal workload and prints
torch.profiler's top CUDA kernels for one packed batch.

    python benchmarks/profile_packed.py --model random:3B --max-tokens 16384 --out $OUT
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from esmdiv.forward.attention import resolve_backend
from esmdiv.forward.packed import packed_forward
from esmdiv.forward.packing import batches_by_tokens, encode, encoder_table, pack, pad
from esmdiv.forward.padded import padded_forward
from esmdiv.input.workloads import lognormal_workload
from esmdiv.model.loading import load_model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="random:3B")
    parser.add_argument("--dtype", default="fp16")
    parser.add_argument("--max-tokens", type=int, default=16384)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("out"))
    parser.add_argument("--compile", action="store_true", help="profile the torch.compile'd packed path")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    device = torch.device("cuda")
    loaded = load_model(args.model, device, dtype)
    backend = resolve_backend("auto", device, dtype)
    table = encoder_table(loaded.alphabet)
    tokens = [encode(s.sequence, loaded.alphabet, table) for s in lognormal_workload(args.n)]
    batches = [[tokens[i] for i in b] for b in batches_by_tokens([len(t) for t in tokens], args.max_tokens)]
    n_tokens = sum(len(t) for t in tokens)
    padded_batches = [pad(b, loaded.alphabet.padding_idx).to(device) for b in batches]
    packed_batches = [pack(b).to(device) for b in batches]

    def time_path(run) -> float:
        run()  # warm-up
        torch.cuda.synchronize()
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            run()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return sorted(times)[len(times) // 2]

    results = {
        "model": args.model,
        "dtype": args.dtype,
        "backend": backend,
        "tokens": n_tokens,
        "batches": len(batches),
        "gpu": torch.cuda.get_device_name(),
    }
    for name, run in (
        ("padded", lambda: [padded_forward(loaded.model, b) for b in padded_batches]),
        ("packed", lambda: [packed_forward(loaded.model, b, backend, compile=args.compile) for b in packed_batches]),
    ):
        torch.cuda.reset_peak_memory_stats()
        seconds = time_path(run)
        results[name] = {
            "seconds": seconds,
            "tokens_per_s": n_tokens / seconds,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
        }
        print(f"{name:7} {n_tokens / seconds:10,.0f} tokens/s  peak {results[name]['peak_gib']:.1f} GiB")

    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        packed_forward(loaded.model, packed_batches[len(packed_batches) // 2], backend, compile=args.compile)
        torch.cuda.synchronize()
    table_text = prof.key_averages().table(sort_by="cuda_time_total", row_limit=20)
    (args.out / f"profile-{args.model.replace(':', '_')}{'-compiled' if args.compile else ''}.txt").write_text(
        table_text
    )
    print(table_text[:6000])
    (args.out / f"timing-{args.model.replace(':', '_')}{'-compiled' if args.compile else ''}.json").write_text(
        json.dumps(results, indent=2)
    )


if __name__ == "__main__":
    main()
