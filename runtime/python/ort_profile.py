"""Profiler peer: onnxruntime's per-node times on a model (`enable_profiling`).
Usage: ort_profile.py MODEL --batch B --threads T --warmup W --iters N [--size H,W]
Prints one JSON line: {"run_ms": median run, "nodes": [{"name", "op", "ms"}], "outputs": {name: [flat values]}}
where a node's ms is its median over the timed runs (warm-up runs are left out)."""

import argparse
import json
import os
import tempfile
from collections import defaultdict

import numpy as np
import onnxruntime as ort


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--size", default="", help="H,W for dynamic spatial dims")
    p.add_argument("--input", default="", help="raw little-endian f32 input file (else seeded normal)")
    a = p.parse_args()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = a.threads
    opts.inter_op_num_threads = 1
    opts.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        opts.profile_file_prefix = os.path.join(tmp, "ort")
        sess = ort.InferenceSession(a.model, opts, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        hw = [int(v) for v in a.size.split(",")] if a.size else []
        dims = list(inp.shape[1:])
        for i, d in enumerate(dims):
            if not isinstance(d, int):
                dims[i] = hw[i - 1] if i >= 1 and len(hw) >= i else 1
        shape = [a.batch] + dims
        if a.input:
            x = np.fromfile(a.input, dtype="<f4").reshape(shape)
        else:
            x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        outs = None
        for _ in range(a.warmup + a.iters):
            outs = sess.run(None, {inp.name: x})
        path = sess.end_profiling()
        with open(path) as f:
            events = json.load(f)
    runs = sorted((e["ts"], e["ts"] + e["dur"], e["dur"]) for e in events if e.get("name") == "model_run")
    timed = runs[-a.iters:]
    start = timed[0][0]
    per_node = defaultdict(lambda: [0.0] * len(timed))
    ops = {}
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time") or e["ts"] < start:
            continue
        name = e["name"][: -len("_kernel_time")]
        k = next(i for i, r in enumerate(timed) if r[0] <= e["ts"] <= r[1])
        per_node[name][k] += e["dur"] / 1e3
        ops[name] = e["args"].get("op_name", "?")
    nodes = [{"name": n, "op": ops[n], "ms": float(np.median(v))} for n, v in per_node.items()]
    result = {
        "run_ms": float(np.median([r[2] / 1e3 for r in timed])),
        "nodes": nodes,
        "outputs": {o.name: v.astype(np.float64).ravel().tolist() for o, v in zip(sess.get_outputs(), outs)},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
