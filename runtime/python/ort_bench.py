"""Benchmark peer: median latency of onnxruntime on a model.
Usage: ort_bench.py MODEL --batch B --threads T --warmup W --iters N
Prints one line: {"median_ms": ..., "batch": B}

ort_bench.py --serve --threads T: a peer that alternates with the caller. Reads commands on stdin,
one per line, and answers each with one line:
  load MODEL B C H W   -> "ok" (session made, input [B, C, H, W] drawn from a seeded normal)
  run N                -> N run times in ms, space-separated"""

import argparse
import json
import time

import numpy as np
import onnxruntime as ort


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model", nargs="?")
    p.add_argument("--serve", action="store_true")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=20)
    a = p.parse_args()
    if a.serve:
        serve(a.threads)
        return
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = a.threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(a.model, opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [a.batch] + [d if isinstance(d, int) else 1 for d in inp.shape[1:]]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(a.warmup):
        sess.run(None, {inp.name: x})
    times = []
    for _ in range(a.iters):
        t = time.perf_counter()
        sess.run(None, {inp.name: x})
        times.append((time.perf_counter() - t) * 1000)
    print(json.dumps({"median_ms": float(np.median(times)), "batch": a.batch}))


def serve(threads: int) -> None:
    import sys

    sess = x = name = None
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "load":
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            sess = ort.InferenceSession(cmd[1], opts, providers=["CPUExecutionProvider"])
            name = sess.get_inputs()[0].name
            x = np.random.default_rng(0).standard_normal([int(v) for v in cmd[2:]]).astype(np.float32)
            print("ok", flush=True)
        elif cmd[0] == "run":
            times = []
            for _ in range(int(cmd[1])):
                t = time.perf_counter()
                sess.run(None, {name: x})
                times.append((time.perf_counter() - t) * 1000)
            print(" ".join(f"{v:.4f}" for v in times), flush=True)


if __name__ == "__main__":
    main()
