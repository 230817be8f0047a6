"""Build, for every ModelVersion under examples/models/, a small ONNX model with the signature
its exporter produces at the example's input size and label count, so a test can check that
verification accepts each example's contract.

The graph is what matters to the contract, not the weights: the declared input (NCHW or NHWC,
the example's channels and size) is averaged per channel and mapped by one Gemm onto the
outputs, reshaped to the exporter's layout and named as the exporter names them:

- logits: [N, C] (with Softmax when the example says the scores are probabilities)
- yolo: Ultralytics [N, 4 + C, A]; with objectness (YOLOv5/v7) [N, A, 5 + C]; a YOLOX raw grid
  [N, A, 5 + C] over the example's strides
- boxesScores: boxes [N, A, 4] (sigmoid when normalized) and scores [N, A, C], or, with a labels
  output (NMS inside the graph), boxes [N, K, 4], scores [N, K] and int64 labels [N, K]

Usage: python example_models.py OUT_DIR   (writes <stem>.onnx and done-<hash of the examples>)
"""

import glob
import hashlib
import os
import sys

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(HERE, "..", "..", "..", "examples", "models")


def examples_hash(paths):
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


def anchors(width, height, strides):
    return sum((width // s) * (height // s) for s in strides)


def build(spec, rng):
    inp = spec["input"]
    w, h, c = inp["width"], inp["height"], inp.get("channels", 3)
    nhwc = inp.get("layout", "nchw") == "nhwc"
    labels = len(spec["labels"])
    out = spec.get("output", {})
    decoder = out.get("decoder", "logits")
    shape_in = ["N", h, w, c] if nhwc else ["N", c, h, w]
    nodes = [helper.make_node("ReduceMean", ["images"], ["pooled"], axes=[1, 2] if nhwc else [2, 3], keepdims=0)]
    inits = []
    outputs = []

    def dense(name, size):
        wname, bname = name + "_w", name + "_b"
        inits.append(numpy_helper.from_array(rng.normal(0, 0.5, (size, c)).astype(np.float32), wname))
        inits.append(numpy_helper.from_array(rng.normal(0, 0.5, (size,)).astype(np.float32), bname))
        nodes.append(helper.make_node("Gemm", ["pooled", wname, bname], [name + "_flat"], transB=1))
        return name + "_flat"

    def reshaped(flat, name, dims):
        sname = name + "_shape"
        inits.append(numpy_helper.from_array(np.array([-1] + dims, dtype=np.int64), sname))
        nodes.append(helper.make_node("Reshape", [flat, sname], [name]))

    if decoder == "logits":
        flat = dense("logits", labels)
        if out.get("classScores") == "probabilities":
            nodes.append(helper.make_node("Softmax", [flat], ["probabilities"], axis=1))
            outputs.append(("probabilities", ["N", labels], TensorProto.FLOAT))
        else:
            nodes.append(helper.make_node("Identity", [flat], ["logits"]))
            outputs.append(("logits", ["N", labels], TensorProto.FLOAT))
    elif decoder == "yolo":
        strides = out.get("strides") or [8, 16, 32]
        a = anchors(w, h, strides)
        name = out.get("output", "output0")
        if out.get("objectness") or out.get("strides"):
            dims = [a, 5 + labels]
        else:
            dims = [4 + labels, a]
        flat = dense("raw", dims[0] * dims[1])
        # Boxes and scores in plausible ranges: positive sizes, scores in 0..1.
        nodes.append(helper.make_node("Sigmoid", [flat], ["raw_sig"]))
        reshaped("raw_sig", name, dims)
        outputs.append((name, ["N"] + dims, TensorProto.FLOAT))
    elif decoder == "boxesScores":
        boxes_name = out.get("boxesOutput", "boxes")
        scores_name = out.get("scoresOutput", "scores")
        labels_name = out.get("labelsOutput")
        k = 100
        flat = dense("boxes", k * 4)
        nodes.append(helper.make_node("Sigmoid", [flat], ["boxes_unit"]))
        if out.get("normalizedBoxes"):
            box_src = "boxes_unit"
        else:
            scale = numpy_helper.from_array(np.array([float(max(w, h))], dtype=np.float32), "box_scale")
            inits.append(scale)
            nodes.append(helper.make_node("Mul", ["boxes_unit", "box_scale"], ["boxes_px"]))
            box_src = "boxes_px"
        reshaped(box_src, boxes_name, [k, 4])
        outputs.append((boxes_name, ["N", k, 4], TensorProto.FLOAT))
        if labels_name:
            flat = dense("scores", k)
            nodes.append(helper.make_node("Sigmoid", [flat], [scores_name]))
            outputs.append((scores_name, ["N", k], TensorProto.FLOAT))
            flat = dense("classes", k)
            top = numpy_helper.from_array(np.array([labels - 0.01], dtype=np.float32), "class_top")
            inits.append(top)
            nodes += [
                helper.make_node("Sigmoid", [flat], ["classes_unit"]),
                helper.make_node("Mul", ["classes_unit", "class_top"], ["classes_f"]),
                helper.make_node("Floor", ["classes_f"], ["classes_i"]),
                helper.make_node("Cast", ["classes_i"], [labels_name], to=TensorProto.INT64),
            ]
            outputs.append((labels_name, ["N", k], TensorProto.INT64))
        else:
            flat = dense("scores", k * labels)
            nodes.append(helper.make_node("Sigmoid", [flat], ["scores_unit"]))
            reshaped("scores_unit", scores_name, [k, labels])
            outputs.append((scores_name, ["N", k, labels], TensorProto.FLOAT))
    else:
        raise SystemExit(f"unknown decoder {decoder}")

    graph = helper.make_graph(
        nodes,
        spec["model"],
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, shape_in)],
        [helper.make_tensor_value_info(n, t, s) for n, s, t in outputs],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    paths = sorted(glob.glob(os.path.join(EXAMPLES, "*.yaml")))
    rng = np.random.default_rng(7)
    for p in paths:
        with open(p) as f:
            doc = yaml.safe_load(f)
        stem = os.path.splitext(os.path.basename(p))[0]
        model = build(doc["spec"], rng)
        tmp = os.path.join(out, stem + ".onnx.tmp")
        onnx.save(model, tmp)
        os.replace(tmp, os.path.join(out, stem + ".onnx"))
    with open(os.path.join(out, "done-" + examples_hash(paths)), "w") as f:
        f.write("\n".join(os.path.basename(p) for p in paths))
    print(out)


if __name__ == "__main__":
    main()
