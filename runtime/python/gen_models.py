"""Generate the whole-model comparison set: small vision models exported the way common tools
export them (older opsets, padded pools, BatchNorm after Conv, Constant weights, SiLU as
Sigmoid+Mul, HardSwish, depthwise convs, ConvTranspose + Resize), with onnxruntime outputs as
the oracle.

Layout: <out>/<model>/model.onnx, input_0.pb, output_<i>.pb (onnxruntime's outputs).
The directory is keyed by a version string and the onnx/onnxruntime versions; generation is
deterministic (fixed seed).

Usage: python gen_models.py [--out DIR] [--size N] [--batch B]   (prints the directory)
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

GENERATOR_VERSION = "v2"


class Builder:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0

    def name(self, p: str) -> str:
        self.n += 1
        return f"{p}_{self.n}"

    def weight(self, shape, scale=None, constant_node=False) -> str:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        scale = scale if scale is not None else (2.0 / max(fan_in, 1)) ** 0.5
        arr = (self.rng.standard_normal(shape) * scale).astype(np.float32)
        name = self.name("w")
        if constant_node:
            # Older exporters emitted weights as Constant nodes.
            self.nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(arr, name)))
        else:
            self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def const(self, arr, dtype=np.int64) -> str:
        name = self.name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(arr, dtype=dtype), name))
        return name

    def node(self, op, inputs, n_out=1, **attrs):
        outs = [self.name(op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=self.name(op), **attrs))
        return outs[0] if n_out == 1 else outs

    def conv(self, x, cin, cout, k, s=1, p=None, groups=1, bias=False, const=False, **kw):
        p = k // 2 if p is None else p
        ins = [x, self.weight((cout, cin // groups, k, k), constant_node=const)]
        if bias:
            ins.append(self.weight((cout,), scale=0.1))
        return self.node("Conv", ins, kernel_shape=[k, k], strides=[s, s], pads=[p, p, p, p], group=groups, **kw)

    def bn(self, x, c):
        scale = self.const(self.rng.uniform(0.5, 1.5, c), np.float32)
        bias = self.const(self.rng.uniform(-0.2, 0.2, c), np.float32)
        mean = self.const(self.rng.uniform(-0.2, 0.2, c), np.float32)
        var = self.const(self.rng.uniform(0.5, 1.5, c), np.float32)
        return self.node("BatchNormalization", [x, scale, bias, mean, var], epsilon=1e-5)

    def silu(self, x):
        return self.node("Mul", [x, self.node("Sigmoid", [x])])

    def model(self, inputs, outputs, opset) -> onnx.ModelProto:
        g = helper.make_graph(self.nodes, "g", inputs, outputs, self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
        m.ir_version = 7
        # (no checker: outputs deliberately carry no shape, as many exporters leave them)
        return m


def img_input(c, size):
    return helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", c, size, size])


def out(name):
    o = onnx.ValueInfoProto()
    o.name = name
    o.type.tensor_type.elem_type = TensorProto.FLOAT
    return o


def classifier(size: int) -> onnx.ModelProto:
    """ResNet-style: Conv+BN+Relu, padded MaxPool, residual blocks, GAP, Flatten, Gemm (opset 11)."""
    b = Builder(1)
    x = b.node("Relu", [b.bn(b.conv("images", 3, 16, 7, s=2, p=3), 16)])
    x = b.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    c = 16
    for cout, s in [(16, 1), (32, 2), (64, 2)]:
        y = b.node("Relu", [b.bn(b.conv(x, c, cout, 3, s=s), cout)])
        y = b.bn(b.conv(y, cout, cout, 3), cout)
        sc = x if (s == 1 and c == cout) else b.bn(b.conv(x, c, cout, 1, s=s, p=0), cout)
        x = b.node("Relu", [b.node("Add", [y, sc])])
        c = cout
    x = b.node("GlobalAveragePool", [x])
    x = b.node("Flatten", [x], axis=1)
    logits = b.node("Gemm", [x, b.weight((10, c)), b.weight((10,), scale=0.1)], transB=1)
    b.nodes[-1].output[0] = "logits"
    return b.model([img_input(3, size)], [out("logits")], 11)


def detector(size: int) -> onnx.ModelProto:
    """YOLO-style: Conv+BN+SiLU, C2f-like Split/Concat, SPPF, nearest Resize, two heads (opset 17)."""
    b = Builder(2)

    def cbs(x, cin, cout, k, s=1):
        return b.silu(b.bn(b.conv(x, cin, cout, k, s=s), cout))

    x = cbs("images", 3, 16, 3, 2)
    x = cbs(x, 16, 32, 3, 2)
    a, bb = b.node("Split", [x, b.const([16, 16])], n_out=2, axis=1)
    y = cbs(cbs(bb, 16, 16, 3), 16, 16, 3)
    x = cbs(b.node("Concat", [a, bb, y], axis=1), 48, 32, 1)
    p3 = x
    x = cbs(x, 32, 64, 3, 2)
    # SPPF: three chained padded 5x5 max pools.
    t = cbs(x, 64, 32, 1)
    m1 = b.node("MaxPool", [t], kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2])
    m2 = b.node("MaxPool", [m1], kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2])
    m3 = b.node("MaxPool", [m2], kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2])
    p4 = cbs(b.node("Concat", [t, m1, m2, m3], axis=1), 128, 64, 1)
    up = b.node("Resize", [p4, "", b.const([1, 1, 2, 2], np.float32)], mode="nearest",
                coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    p3 = cbs(b.node("Concat", [up, p3], axis=1), 96, 32, 3)
    heads = []
    no = 4 + 3  # box + classes
    for feat, c in [(p3, 32), (p4, 64)]:
        h = b.conv(feat, c, no, 1, p=0, bias=True)
        heads.append(b.node("Reshape", [h, b.const([0, no, -1])]))
    cat = b.node("Concat", heads, axis=2)
    boxes = b.node("Slice", [cat, b.const([0]), b.const([4]), b.const([1])])
    cls = b.node("Sigmoid", [b.node("Slice", [cat, b.const([4]), b.const([no]), b.const([1])])])
    pred = b.node("Concat", [boxes, cls], axis=1)
    b.nodes.append(helper.make_node("Transpose", [pred], ["output0"], perm=[0, 2, 1]))
    return b.model([img_input(3, size)], [out("output0")], 17)


def mobilenet(size: int) -> onnx.ModelProto:
    """MobileNetV3-style: HardSwish, depthwise convs, SE with HardSigmoid, Relu6 as Clip attrs,
    padded AveragePool, Constant-node weights, legacy Softmax (opset 9)."""
    b = Builder(3)
    x = b.bn(b.conv("images", 3, 16, 3, s=2, const=True), 16)
    # HardSwish expressed as x * HardSigmoid(x) (opset 9 has no HardSwish).
    x = b.node("Mul", [x, b.node("HardSigmoid", [x], alpha=1 / 6, beta=0.5)])
    c = 16
    for cexp, cout, s in [(32, 24, 2), (48, 24, 1), (64, 40, 2)]:
        y = b.node("Clip", [b.bn(b.conv(x, c, cexp, 1, p=0), cexp)], min=0.0, max=6.0)
        y = b.node("Clip", [b.bn(b.conv(y, cexp, cexp, 3, s=s, groups=cexp), cexp)], min=0.0, max=6.0)
        se = b.node("GlobalAveragePool", [y])
        se = b.node("Relu", [b.conv(se, cexp, 8, 1, p=0, bias=True)])
        se = b.node("HardSigmoid", [b.conv(se, 8, cexp, 1, p=0, bias=True)], alpha=0.2, beta=0.5)
        y = b.node("Mul", [y, se])
        y = b.bn(b.conv(y, cexp, cout, 1, p=0), cout)
        x = b.node("Add", [x, y]) if (s == 1 and c == cout) else y
        c = cout
    x = b.node("AveragePool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=0)
    x = b.node("GlobalAveragePool", [x])
    x = b.node("Flatten", [x], axis=1)
    x = b.node("Gemm", [x, b.weight((10, c)), b.weight((10,), scale=0.1)], transB=1)
    b.nodes.append(helper.make_node("Softmax", [x], ["probs"], axis=1))
    return b.model([img_input(3, size)], [out("probs")], 9)


def encoder_decoder(size: int) -> onnx.ModelProto:
    """U-Net-style: strided convs down, ConvTranspose and linear Resize up, skip Concat, reflect Pad (opset 13)."""
    b = Builder(4)
    e1 = b.node("Relu", [b.conv("images", 3, 16, 3, s=2, bias=True)])
    e2 = b.node("LeakyRelu", [b.conv(e1, 16, 32, 3, s=2, bias=True)], alpha=0.1)
    d1 = b.node("ConvTranspose", [e2, b.weight((32, 16, 3, 3)), b.weight((16,), scale=0.1)],
                kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])
    d1 = b.node("Relu", [d1])
    d1 = b.node("Concat", [d1, e1], axis=1)
    d1 = b.node("Pad", [d1, b.const([0, 0, 1, 1, 0, 0, 1, 1])], mode="reflect")
    d1 = b.node("Relu", [b.conv(d1, 32, 16, 3, p=0, bias=True)])
    up = b.node("Resize", [d1, "", b.const([1, 1, 2, 2], np.float32)], mode="linear",
                coordinate_transformation_mode="half_pixel")
    y = b.conv(up, 16, 2, 3, bias=True)
    b.nodes.append(helper.make_node("Sigmoid", [y], ["mask"]))
    return b.model([img_input(3, size)], [out("mask")], 13)


def plain_cnn(size: int) -> onnx.ModelProto:
    """VGG-style net restricted to what candle-onnx's simple_eval runs (symmetric pads, unpadded
    2x2 pools, ReduceMean with axes attribute), so the benchmark has a common model (opset 13)."""
    b = Builder(5)
    x, c = "images", 3
    for cout in [16, 32, 64, 64]:
        x = b.node("Relu", [b.conv(x, c, cout, 3, bias=True)])
        x = b.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
        c = cout
    x = b.node("ReduceMean", [x], axes=[2, 3], keepdims=0)
    b.nodes.append(helper.make_node("Gemm", [x, b.weight((10, c)), b.weight((10,), scale=0.1)], ["logits"], transB=1))
    return b.model([img_input(3, size)], [out("logits")], 13)


MODELS = {"classifier": classifier, "detector": detector, "mobilenet": mobilenet, "encoder_decoder": encoder_decoder, "plain_cnn": plain_cnn}


def cache_root() -> str:
    return os.environ.get("FLYWHEEL_CACHE") or os.path.expanduser("~/.cache/flywheel")


def write(out: str, size: int, batch: int) -> None:
    parent = os.path.dirname(out) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
    rng = np.random.default_rng(0)
    for name, build in MODELS.items():
        d = os.path.join(tmp, name)
        os.makedirs(d)
        m = build(size)
        data = m.SerializeToString()
        with open(os.path.join(d, "model.onnx"), "wb") as f:
            f.write(data)
        x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        outs = sess.run(None, {"images": x})
        with open(os.path.join(d, "input_0.pb"), "wb") as f:
            f.write(numpy_helper.from_array(x, "images").SerializeToString())
        for i, o in enumerate(outs):
            with open(os.path.join(d, f"output_{i}.pb"), "wb") as f:
                f.write(numpy_helper.from_array(o, sess.get_outputs()[i].name).SerializeToString())
    with open(os.path.join(tmp, "COMPLETE"), "w") as f:
        f.write("ok\n")
    if os.path.exists(out):
        shutil.rmtree(out)
    os.rename(tmp, out)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    out = a.out or os.path.join(cache_root(), "runtime-models",
                                f"{GENERATOR_VERSION}-onnx{onnx.__version__}-ort{ort.__version__}-s{a.size}-b{a.batch}")
    if not os.path.exists(os.path.join(out, "COMPLETE")):
        write(out, a.size, a.batch)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
