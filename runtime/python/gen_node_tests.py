"""Generate the ONNX backend node test suite into a cache directory.

Recent `onnx` wheels no longer ship the generated data, only its generators
(`onnx.backend.test.case.node`). This writes the upstream layout
<out>/<test>/model.onnx + test_data_set_*/input_*.pb, output_*.pb.
np.random.seed(0) before collection makes the output byte-reproducible, so the
directory is keyed by the onnx version and generated once.

Usage: python gen_node_tests.py [--out DIR]   (prints the directory it filled)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

import numpy as np
import onnx
from onnx import numpy_helper


def default_out() -> str:
    cache = os.environ.get("FLYWHEEL_CACHE") or os.path.expanduser("~/.cache/flywheel")
    return os.path.join(cache, "onnx-node-tests", f"onnx-{onnx.__version__}")


def write_proto(path: str, value, name: str) -> None:
    proto = value if isinstance(value, onnx.TensorProto) else numpy_helper.from_array(np.asarray(value), name)
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=default_out())
    args = parser.parse_args()
    out = args.out
    if os.path.exists(os.path.join(out, "COMPLETE")):
        print(out)
        return 0
    np.random.seed(0)
    from onnx.backend.test.case import node

    cases = node.collect_testcases()
    parent = os.path.dirname(out) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
    written = 0
    for case in cases:
        if case.kind != "node" or case.model is None:
            continue
        graph = case.model.graph
        # Only plain tensor inputs/outputs: sequences/maps/optionals are out of scope.
        if any(not v.type.HasField("tensor_type") for v in list(graph.input) + list(graph.output)):
            continue
        case_dir = os.path.join(tmp, case.name)
        os.makedirs(case_dir)
        with open(os.path.join(case_dir, "model.onnx"), "wb") as f:
            f.write(case.model.SerializeToString())
        for i, (inputs, outputs) in enumerate(case.data_sets):
            ds = os.path.join(case_dir, f"test_data_set_{i}")
            os.makedirs(ds)
            for j, value in enumerate(inputs):
                write_proto(os.path.join(ds, f"input_{j}.pb"), value, graph.input[j].name)
            for j, value in enumerate(outputs):
                write_proto(os.path.join(ds, f"output_{j}.pb"), value, graph.output[j].name)
        written += 1
    with open(os.path.join(tmp, "COMPLETE"), "w") as f:
        f.write(f"{written}\n")
    if os.path.exists(out):
        shutil.rmtree(out)
    os.rename(tmp, out)  # atomic publish: readers never see a half-written suite
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
