"""Generate the small ONNX models the inference-server tests and benchmark serve.

Every model is a real ONNX graph run by the runtime; weights are chosen so that the answer is
predictable from the image (colour → class, coloured square → box), which lets tests check
the whole path from pixels to shapes.

- colour_classifier.onnx: [N,3,64,64] → GlobalAveragePool → Gemm → logits [N,3] (red, green, blue)
- colour_classifier_confused.onnx: same, but calls red "green" (a shadow that disagrees)
- square_detector.onnx: [N,3,64,64] → 8x8 AveragePool → 1x1 Conv → Sigmoid class scores per
  cell; boxes are the cells (cx, cy, w, h) → YOLOv8 layout [N, 4+2, 64] (classes red, blue)
- hardmax_classifier.onnx: the colour classifier ending in Hardmax, an op the runtime does not
  implement (verification must refuse it, naming the op)
- cnn64.onnx: a small 3-conv CNN on 64x64 (benchmark model), logits [N,10], random weights

Usage: python gen_models.py OUT_DIR
"""

import sys
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def model(nodes, inits, outputs, name):
    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 64, 64])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs]
    g = helper.make_graph(nodes, name, [inp], outs, initializer=[numpy_helper.from_array(a, n) for n, a in inits])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def colour_classifier(weights):
    nodes = [
        helper.make_node("GlobalAveragePool", ["images"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "w", "b"], ["logits"], transB=1),
    ]
    w = np.asarray(weights, dtype=np.float32)
    b = np.zeros(3, dtype=np.float32)
    return model(nodes, [("w", w), ("b", b)], [("logits", ["N", 3])], "colour_classifier")


def hardmax_classifier(weights):
    m = colour_classifier(weights)
    g = m.graph
    g.node[-1].output[0] = "logits_raw"
    g.node.append(helper.make_node("Hardmax", ["logits_raw"], ["logits"], axis=1))
    onnx.checker.check_model(m)
    return m


def square_detector():
    cell = 8
    grid = 64 // cell
    nodes = [
        helper.make_node("AveragePool", ["images"], ["pooled"], kernel_shape=[cell, cell], strides=[cell, cell]),
        helper.make_node("Conv", ["pooled", "wc", "bc"], ["logit"], kernel_shape=[1, 1]),
        helper.make_node("Sigmoid", ["logit"], ["scores"]),
        helper.make_node("Reshape", ["scores", "score_shape"], ["scores_flat"]),
        # Boxes are constant per cell; multiply-by-zero ties them to the batch size.
        helper.make_node("Conv", ["pooled", "wz", "bz"], ["zeros"], kernel_shape=[1, 1]),
        helper.make_node("Add", ["zeros", "cells"], ["boxes"]),
        helper.make_node("Reshape", ["boxes", "box_shape"], ["boxes_flat"]),
        helper.make_node("Concat", ["boxes_flat", "scores_flat"], ["output0"], axis=1),
    ]
    wc = np.array([[12, -12, -12], [-12, -12, 12]], dtype=np.float32).reshape(2, 3, 1, 1)
    bc = np.array([-3, -3], dtype=np.float32)
    cells = np.zeros((1, 4, grid, grid), dtype=np.float32)
    for i in range(grid):
        for j in range(grid):
            cells[0, :, i, j] = [cell * j + cell / 2, cell * i + cell / 2, cell, cell]
    inits = [
        ("wc", wc), ("bc", bc),
        ("wz", np.zeros((4, 3, 1, 1), dtype=np.float32)), ("bz", np.zeros(4, dtype=np.float32)),
        ("cells", cells),
        ("score_shape", np.array([0, 2, grid * grid], dtype=np.int64)),
        ("box_shape", np.array([0, 4, grid * grid], dtype=np.int64)),
    ]
    return model(nodes, inits, [("output0", ["N", 6, grid * grid])], "square_detector")


def cnn64():
    rng = np.random.default_rng(7)
    nodes, inits, x, c = [], [], "images", 3
    for k, cout in enumerate([16, 32, 64]):
        w = (rng.standard_normal((cout, c, 3, 3)) * (2 / (c * 9)) ** 0.5).astype(np.float32)
        b = np.zeros(cout, dtype=np.float32)
        inits += [(f"w{k}", w), (f"b{k}", b)]
        nodes.append(helper.make_node("Conv", [x, f"w{k}", f"b{k}"], [f"c{k}"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{k}"], [f"r{k}"]))
        x, c = f"r{k}", cout
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], axis=1))
    inits += [("wf", (rng.standard_normal((10, c)) * 0.1).astype(np.float32)), ("bf", np.zeros(10, dtype=np.float32))]
    nodes.append(helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], transB=1))
    return model(nodes, inits, [("logits", ["N", 10])], "cnn64")


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rgb = [[10, -5, -5], [-5, 10, -5], [-5, -5, 10]]
    confused = [[-5, 10, -5], [10, -5, -5], [-5, -5, 10]]
    models = {
        "colour_classifier.onnx": colour_classifier(rgb),
        "colour_classifier_confused.onnx": colour_classifier(confused),
        "square_detector.onnx": square_detector(),
        "hardmax_classifier.onnx": hardmax_classifier(rgb),
        "cnn64.onnx": cnn64(),
    }
    for name, m in models.items():
        tmp = os.path.join(out, name + ".tmp")
        onnx.save(m, tmp)
        os.replace(tmp, os.path.join(out, name))
    print(out)


if __name__ == "__main__":
    main()
