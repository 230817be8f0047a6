"""Generate the selection-op comparison set (TopK, NonMaxSuppression), with onnxruntime's
outputs as the oracle.

Models (post-processing graphs as detectors export them with NMS inside the graph):
- nms_yolo: boxes [1, 240, 4] as (x_center, y_center, width, height) and scores [1, 3, 240]
  -> NonMaxSuppression (center_point_box=1, max 90 per class, IoU 0.5, score threshold 0.3)
  -> Gather of the box-index column -> Gather of the boxes: outputs the selected indices and
  the selected boxes.
- nms_topk_corners: boxes [2, 300, 4] as corners (y1, x1, y2, x2), some flipped, and scores
  [2, 4, 300] -> ReduceMax over the classes -> TopK (K = 60 as an input) of the best class
  score; NonMaxSuppression without a score threshold (max 127 per class, IoU 0.5).
- topk_variants: TopK of a [3, 40, 5] float tensor along axis 1 (smallest 7), of an int32
  [6, 9] tensor along axis 0 (largest 4) and of a float16 [4, 33] along the last axis (largest 33).
- topk_opset1: TopK-1 (k as an attribute) along the default last axis.
Boxes sit on an integer grid and scores on a coarse grid, so there are many equal scores and
IoU values landing exactly on the threshold: the tie-breaking and the comparison direction
are what decides those outputs.

Layout: <out>/<name>/model.onnx, input_<i>.pb (named after the graph inputs), output_<i>.pb
(onnxruntime's outputs). Keyed by a version string and the onnx/onnxruntime versions;
generation is deterministic.

Usage: python gen_select_models.py [--out DIR]   (prints the directory)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

GENERATOR_VERSION = "v1"


def tensor_info(name: str, arr: np.ndarray) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(arr.dtype), arr.shape)


def model(name, nodes, inputs: dict[str, np.ndarray], outputs, consts: dict[str, np.ndarray], opset=11):
    inits = [numpy_helper.from_array(v, k) for k, v in consts.items()]
    graph = helper.make_graph(nodes, name, [tensor_info(k, v) for k, v in inputs.items()],
                              [onnx.ValueInfoProto(name=o) for o in outputs], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 7
    return m


def write_case(root: str, m: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> None:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    outs = sess.run(None, inputs)
    for o, r in zip(m.graph.output, outs):
        o.type.tensor_type.elem_type = helper.np_dtype_to_tensor_dtype(r.dtype)
    d = os.path.join(root, m.graph.name)
    os.makedirs(d)
    onnx.save(m, os.path.join(d, "model.onnx"))
    for i, (k, v) in enumerate(inputs.items()):
        onnx.save_tensor(numpy_helper.from_array(v, k), os.path.join(d, f"input_{i}.pb"))
    for i, (o, r) in enumerate(zip(m.graph.output, outs)):
        onnx.save_tensor(numpy_helper.from_array(r, o.name), os.path.join(d, f"output_{i}.pb"))


def grid_boxes(rng, n: int, span: int = 6) -> np.ndarray:
    """n boxes as (x_center, y_center, width, height) on a grid: many pairs overlap, some exactly
    on IoU 0.5 and identical boxes too."""
    xy = rng.integers(0, span, (n, 2)) * 2.0
    wh = rng.integers(1, 5, (n, 2)) * 2.0
    return np.concatenate([xy, wh], axis=1).astype(np.float32)


def nms_yolo(rng) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    boxes = grid_boxes(rng, 240)[None]
    scores = (rng.integers(0, 20, (1, 3, 240)) / 20.0).astype(np.float32)
    nodes = [
        helper.make_node("NonMaxSuppression", ["boxes", "scores", "max_out", "iou", "score_thr"], ["selected"],
                         center_point_box=1, name="nms"),
        helper.make_node("Gather", ["selected", "col2"], ["box_index"], axis=1, name="box_index"),
        helper.make_node("Reshape", ["boxes", "flat_shape"], ["flat_boxes"], name="flatten_boxes"),
        helper.make_node("Gather", ["flat_boxes", "box_index"], ["picked"], axis=0, name="pick"),
    ]
    consts = {"max_out": np.array([90], np.int64), "iou": np.array([0.5], np.float32),
              "score_thr": np.array([0.3], np.float32), "col2": np.array(2, np.int64),
              "flat_shape": np.array([-1, 4], np.int64)}
    return model("nms_yolo", nodes, {"boxes": boxes, "scores": scores}, ["selected", "picked"], consts), \
        {"boxes": boxes, "scores": scores}


def nms_topk_corners(rng) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    c = grid_boxes(rng, 600)
    x0, x1 = c[:, 0] - c[:, 2] / 2, c[:, 0] + c[:, 2] / 2
    y0, y1 = c[:, 1] - c[:, 3] / 2, c[:, 1] + c[:, 3] / 2
    flip = rng.random(600) < 0.3
    boxes = np.stack([np.where(flip, y1, y0), np.where(flip, x1, x0), np.where(flip, y0, y1),
                      np.where(flip, x0, x1)], axis=1).reshape(2, 300, 4).astype(np.float32)
    scores = (rng.integers(0, 40, (2, 4, 300)) / 40.0).astype(np.float32)
    nodes = [
        helper.make_node("ReduceMax", ["scores"], ["best"], axes=[1], keepdims=0, name="best_class"),
        helper.make_node("TopK", ["best", "k"], ["top_scores", "top_index"], axis=1, name="top"),
        helper.make_node("NonMaxSuppression", ["boxes", "scores", "max_out", "iou"], ["selected"], name="nms"),
    ]
    consts = {"k": np.array([60], np.int64), "max_out": np.array([127], np.int64),
              "iou": np.array([0.5], np.float32)}
    inputs = {"boxes": boxes, "scores": scores}
    return model("nms_topk_corners", nodes, inputs, ["top_scores", "top_index", "selected"], consts), inputs


def topk_variants(rng) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    inputs = {
        "x": (rng.integers(-6, 6, (3, 40, 5)) / 4.0).astype(np.float32),
        "xi": rng.integers(-5, 5, (6, 9)).astype(np.int32),
        "xh": (rng.integers(-8, 8, (4, 33)) / 8.0).astype(np.float16),
    }
    nodes = [
        helper.make_node("TopK", ["x", "k7"], ["v0", "i0"], axis=1, largest=0, name="smallest"),
        helper.make_node("TopK", ["xi", "k4"], ["v1", "i1"], axis=0, name="int32"),
        helper.make_node("TopK", ["xh", "k33"], ["v2", "i2"], axis=-1, name="half_all"),
    ]
    consts = {"k7": np.array([7], np.int64), "k4": np.array([4], np.int64), "k33": np.array([33], np.int64)}
    return model("topk_variants", nodes, inputs, ["v0", "i0", "v1", "i1", "v2", "i2"], consts), inputs


def topk_opset1(rng) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    inputs = {"x": (rng.integers(0, 10, (5, 16)) / 2.0).astype(np.float32)}
    nodes = [helper.make_node("TopK", ["x"], ["v", "i"], k=6, name="top")]
    return model("topk_opset1", nodes, inputs, ["v", "i"], {}, opset=1), inputs


def write(out_dir: str) -> None:
    parent = os.path.dirname(out_dir) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
    try:
        rng = np.random.default_rng(7)
        for make in [nms_yolo, nms_topk_corners, topk_variants, topk_opset1]:
            m, inputs = make(rng)
            write_case(tmp, m, inputs)
        with open(os.path.join(tmp, "COMPLETE"), "w") as f:
            f.write("ok\n")
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.rename(tmp, out_dir)  # atomic publish: readers never see a half-written set
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=None)
    a = p.parse_args()
    cache = os.environ.get("FLYWHEEL_CACHE") or os.path.expanduser("~/.cache/flywheel")
    out_dir = a.out or os.path.join(cache, "runtime-models",
                                    f"select-{GENERATOR_VERSION}-onnx{onnx.__version__}-ort{ort.__version__}")
    if not os.path.exists(os.path.join(out_dir, "COMPLETE")):
        write(out_dir)
    print(out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
