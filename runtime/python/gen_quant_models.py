"""Generate the quantized and recurrent whole-model comparison set, with onnxruntime's outputs
as the oracle.

Float models:
- squeezenet, shufflenet: the SqueezeNet 1.0 and ShuffleNet graphs shipped in the onnx wheel
  (onnx/backend/test/data/light/light_*.onnx, Caffe2 exports). The "light" files replace every
  weight with ConstantOfShape(0.02), which makes every channel identical, so the weights are
  replaced by deterministic random ones (He initialisation; BatchNorm statistics and biases
  drawn around their usual values); the graphs are converted to opset 13, the channel-shuffle
  Reshapes copy the batch dimension instead of fixing it to 1, and SqueezeNet (fully
  convolutional) runs at 96x96, ShuffleNet at its 224x224.
- cnn: a small classifier in the layout PyTorch exports (Conv with bias after BatchNorm
  folding, Relu, depthwise conv, MaxPool, residual Add, GlobalAveragePool, Flatten, MatMul + Add).
- crnn_lstm / crnn_gru: CRNN-style text recogniser heads (Conv, Relu, MaxPool, Transpose +
  Reshape to a sequence, a bidirectional LSTM / GRU (linear_before_reset=1, as PyTorch exports
  GRU), Transpose + Reshape, MatMul + Add to per-step class logits).
- lstm_edges / gru_edges / rnn_edges: one recurrent node each with the options exported models
  rarely use: sequence_lens (including a zero length), initial states, peepholes, clip,
  reverse / bidirectional, linear_before_reset=0, Relu.

Quantized with onnxruntime.quantization (MinMax calibration on a few deterministic random
inputs, different from the test inputs):
- <model>.qdq_u8s8: quantize_static, QDQ format, uint8 activations, int8 per-channel weights.
- <model>.qdq_s8s8: quantize_static, QDQ format, int8 activations and weights, per tensor.
- <model>.qop: quantize_static, QOperator format (QLinearConv / QLinearMatMul, uint8).
- <model>.qop_s8s8: the same with int8 activations and int8 per-channel weights.
- <model>.dynamic: quantize_dynamic (DynamicQuantizeLinear + ConvInteger / MatMulInteger).
ShuffleNet (49 convolutions) is quantized in QOperator format only: in QDQ or dynamic format the
rounding ties of a deep network (AveragePool border windows dividing by 4 and 6 land exactly on
.5; dynamic scales move with the last bit of a tensor's maximum) make any two int8
implementations drift apart by whole quanta layer after layer. onnxruntime's optimised and
unoptimised sessions of the QDQ ShuffleNet disagree by 0.12 in probability, more than this
runtime disagrees with either, so such a comparison could not tell a bug from a tie.
int8 weights use reduce_range (7 bits), as onnxruntime recommends on x86 without VNNI, so its
u8s8 kernels cannot saturate and the oracle stays exact on any CPU.

Single quantization nodes with the options the ONNX node tests leave out are in <out>/ops/ (the
node-test layout, see `op_cases`).

Layout: <out>/<name>/model.onnx, input_0.pb, output_<i>.pb (onnxruntime's outputs),
float_output_0.pb (the float model's output on the same input, for the quantized variants) and
meta.txt (`key value` lines: the input name and, for classifiers, the axis of the classes).
Keyed by a version string and the onnx/onnxruntime versions; generation is deterministic.

Usage: python gen_quant_models.py [--out DIR]   (prints the directory)
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
from onnx import TensorProto, helper, numpy_helper, version_converter
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_models import Builder, out  # noqa: E402

GENERATOR_VERSION = "v1"
BATCH = 2


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def light_model(name: str, size: int | None, seed: int) -> onnx.ModelProto:
    """A model of onnx/backend/test/data/light with deterministic random weights, opset 13."""
    path = os.path.join(os.path.dirname(onnx.__file__), f"backend/test/data/light/light_{name}.onnx")
    m = onnx.load(path)
    rng = np.random.default_rng(seed)
    g = m.graph
    arrays = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    users: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for n in g.node:
        for k, i in enumerate(n.input):
            users.setdefault(i, []).append((n, k))
    last_linear = [n for n in g.node if n.op_type in ("Conv", "Gemm")][-1]

    def value(tensor_name: str, shape: tuple[int, ...]) -> np.ndarray:
        consumer, k = users[tensor_name][0]
        op = consumer.op_type
        if op in ("Conv", "Gemm") and k == 1:
            fan_in = int(np.prod(shape[1:]))
            w = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
            return w * 4.0 if consumer is last_linear else w  # spread the class logits: a clear top-1
        if op == "BatchNormalization":
            lo, hi = {1: (0.5, 1.5), 2: (-0.2, 0.2), 3: (-0.2, 0.2), 4: (0.5, 1.5)}[k]
            return rng.uniform(lo, hi, shape)
        return rng.uniform(-0.1, 0.1, shape)  # biases

    inits, nodes = [], []
    shape_inputs = {n.input[0] for n in g.node if n.op_type == "ConstantOfShape"}
    for n in g.node:
        if n.op_type == "ConstantOfShape":
            shape = tuple(int(d) for d in arrays[n.input[0]])
            inits.append(numpy_helper.from_array(value(n.output[0], shape).astype(np.float32), n.output[0]))
        else:
            nodes.append(n)
    for t in g.initializer:
        if t.name in shape_inputs or t.name not in users:  # (ResNet-50 keeps an unused queue blob)
            continue
        a = arrays[t.name]
        if users[t.name][0][0].op_type == "Reshape":
            a = a.copy()
            a[0] = 0  # the exported batch of 1 becomes "copy the input's batch"
        elif a.dtype == np.float32:
            a = value(t.name, a.shape).astype(np.float32)  # the small tensors the light file keeps
        inits.append(numpy_helper.from_array(a, t.name))
    old = [i for i in g.input if i.name not in arrays and i.name not in {n.output[0] for n in g.node}][0]
    dims = [d.dim_value for d in old.type.tensor_type.shape.dim]
    if size is not None:
        dims[2:] = [size, size]
    data = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", *dims[1:]])
    for n in nodes:
        n.input[:] = ["images" if i == old.name else i for i in n.input]
    graph = helper.make_graph(nodes, name, [data], [out(g.output[0].name)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 7
    calibrate_batch_norms(model, rng.standard_normal((4, *dims[1:])).astype(np.float32))
    model = version_converter.convert_version(model, 13)
    model.ir_version = 7
    return model


def calibrate_batch_norms(model: onnx.ModelProto, x: np.ndarray) -> None:
    """Give every BatchNormalization the running statistics of its input on `x`, layer after
    layer, as training would: with random weights the activations would otherwise grow through
    the residual sums until the softmax saturates."""
    inits = {t.name: t for t in model.graph.initializer}
    for n in [n for n in model.graph.node if n.op_type == "BatchNormalization"]:
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        probe.graph.output.append(out(n.input[0]))
        a = session(probe).run([n.input[0]], {probe.graph.input[0].name: x})[0]
        axes = (0, *range(2, a.ndim))
        for k, stat in [(3, a.mean(axis=axes)), (4, a.var(axis=axes))]:
            inits[n.input[k]].CopyFrom(numpy_helper.from_array(stat.astype(np.float32), n.input[k]))


def cnn() -> onnx.ModelProto:
    """[N, 3, 32, 32] -> [N, 10] logits, in the layout PyTorch exports."""
    b = Builder(21)
    x = b.node("Relu", [b.conv("images", 3, 16, 3, s=2, bias=True)])
    y = b.node("Relu", [b.conv(x, 16, 16, 3, groups=16, bias=True)])  # depthwise
    y = b.conv(y, 16, 16, 1, p=0, bias=True)
    x = b.node("Relu", [b.node("Add", [x, y])])
    x = b.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    x = b.node("Relu", [b.conv(x, 16, 32, 3, bias=True)])
    x = b.node("Relu", [b.conv(x, 32, 32, 3, s=2, bias=True)])
    x = b.node("GlobalAveragePool", [x])
    x = b.node("Flatten", [x], axis=1)
    x = b.node("MatMul", [x, b.weight((32, 10), scale=0.5)])
    b.nodes.append(helper.make_node("Add", [x, b.weight((10,), scale=0.1)], ["logits"], name="head_bias"))
    return b.model([helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 32, 32])], [out("logits")], 13)


def crnn(cell: str, hidden: int = 16, classes: int = 12) -> onnx.ModelProto:
    """[N, 1, 8, 32] text-line crops -> [T=16, N, classes] logits."""
    b = Builder(31 if cell == "LSTM" else 32)
    x = b.node("Relu", [b.conv("images", 1, 8, 3, bias=True)])
    x = b.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])  # [N, 8, 4, 16]
    x = b.node("Transpose", [x], perm=[3, 0, 1, 2])  # [T, N, C, H]
    x = b.node("Reshape", [x, b.const([0, 0, -1])])  # [T, N, 32]
    gates = 4 if cell == "LSTM" else 3
    w = b.weight((2, gates * hidden, 32), scale=0.3)
    r = b.weight((2, gates * hidden, hidden), scale=0.3)
    bias = b.weight((2, 2 * gates * hidden), scale=0.1)
    attrs = {"linear_before_reset": 1} if cell == "GRU" else {}
    y = b.node(cell, [x, w, r, bias], n_out=2, hidden_size=hidden, direction="bidirectional", **attrs)[0]
    y = b.node("Transpose", [y], perm=[0, 2, 1, 3])  # [T, N, 2, H]
    y = b.node("Reshape", [y, b.const([0, 0, -1])])  # [T, N, 2H]
    y = b.node("MatMul", [y, b.weight((2 * hidden, classes), scale=0.4)])
    b.nodes.append(helper.make_node("Add", [y, b.weight((classes,), scale=0.1)], ["logits"], name="head_bias"))
    return b.model([helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 1, 8, 32])], [out("logits")], 14)


def recurrent_edges(cell: str) -> onnx.ModelProto:
    """One recurrent node with sequence_lens (one of them 0), initial states, clip and the rarer options."""
    seq, batch, inp, hidden = 5, 4, 3, 4
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[cell]
    rng = np.random.default_rng({"LSTM": 41, "GRU": 42, "RNN": 43}[cell])
    dirs = 2 if cell != "LSTM" else 1
    f = lambda *s: numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), f"t{len(inits)}")  # noqa: E731
    inits: list[onnx.TensorProto] = []
    names = []
    for shape in [(dirs, gates * hidden, inp), (dirs, gates * hidden, hidden), (dirs, 2 * gates * hidden)]:
        inits.append(f(*shape))
        names.append(inits[-1].name)
    inits.append(numpy_helper.from_array(np.array([5, 3, 0, 1], np.int32), "lens"))
    names.append("lens")
    # (layout=1 is covered by the ONNX node tests only: onnxruntime refuses it.)
    state = (dirs, batch, hidden)
    inits.append(f(*state))
    names.append(inits[-1].name)
    outs = ["Y", "Y_h"]
    attrs = {"hidden_size": hidden, "clip": 1.5}
    if cell == "LSTM":
        inits.append(f(*state))
        names.append(inits[-1].name)
        inits.append(f(dirs, 3 * hidden))
        names.append(inits[-1].name)
        outs.append("Y_c")
        attrs["direction"] = "reverse"
    elif cell == "GRU":
        attrs.update(direction="bidirectional", linear_before_reset=0)
    else:
        attrs.update(direction="bidirectional", activations=["Relu", "Tanh"])
    node = helper.make_node(cell, ["x"] + names, outs, name=cell.lower(), **attrs)
    graph = helper.make_graph([node], cell, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [seq, batch, inp])],
                              [out(o) for o in outs], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    m.ir_version = 7
    return m


def op_cases(root: str) -> None:
    """Single quantization nodes in the options the ONNX node tests leave out (per-column and
    int8 weights, grouped / strided / dilated / padded QLinearConv with a bias, int8 per-axis and
    blocked QuantizeLinear, ...), in the node-test layout (model.onnx, test_data_set_0/) with
    onnxruntime's outputs, which must match exactly."""
    rng = np.random.default_rng(5)

    def case(name, node, inputs, consts, opset=21):
        inits = [numpy_helper.from_array(v, k) for k, v in consts.items()]
        ins = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
               for k, v in inputs.items()]
        outs = [onnx.ValueInfoProto(name=o) for o in node.output]
        m = helper.make_model(helper.make_graph([node], name, ins, outs, inits),
                              opset_imports=[helper.make_opsetid("", opset)])
        m.ir_version = 8
        res = session(m).run(None, inputs)
        for o, r in zip(m.graph.output, res):
            o.type.tensor_type.elem_type = helper.np_dtype_to_tensor_dtype(r.dtype)
        d = os.path.join(root, name)
        os.makedirs(os.path.join(d, "test_data_set_0"))
        onnx.save(m, os.path.join(d, "model.onnx"))
        for i, (k, v) in enumerate(inputs.items()):
            onnx.save_tensor(numpy_helper.from_array(v, k), os.path.join(d, "test_data_set_0", f"input_{i}.pb"))
        for i, v in enumerate(res):
            onnx.save_tensor(numpy_helper.from_array(v), os.path.join(d, "test_data_set_0", f"output_{i}.pb"))

    u8 = lambda *s: rng.integers(0, 256, s).astype(np.uint8)  # noqa: E731
    i8 = lambda *s: rng.integers(-128, 128, s).astype(np.int8)  # noqa: E731
    scales = lambda *s: rng.uniform(0.001, 0.02, s).astype(np.float32)  # noqa: E731
    scalar = lambda v, t: np.array(v, t)  # noqa: E731
    m, k, n = 5, 70, 6
    case("qlinearmatmul_per_column", helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"]),
         {"a": u8(3, m, k)}, {"as": scalar(0.02, np.float32), "az": scalar(130, np.uint8), "b": i8(k, n), "bs": scales(n),
                              "bz": np.zeros(n, np.int8), "ys": scalar(0.3, np.float32), "yz": scalar(120, np.uint8)})
    case("matmulinteger_per_column", helper.make_node("MatMulInteger", ["a", "b", "az", "bz"], ["y"]),
         {"a": u8(2, m, k)}, {"b": u8(k, n), "az": scalar(17, np.uint8), "bz": u8(n)})
    case("matmulinteger_s8", helper.make_node("MatMulInteger", ["a", "b", "az", "bz"], ["y"]),
         {"a": u8(m, k)}, {"b": i8(k, n), "az": scalar(200, np.uint8), "bz": scalar(3, np.int8)})
    c, mo, groups = 8, 12, 4
    case("qlinearconv_per_channel_groups",
         helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "B"], ["y"], group=groups,
                          strides=[2, 1], pads=[1, 2, 0, 1], dilations=[1, 2], kernel_shape=[3, 3]),
         {"x": u8(2, c, 11, 13)}, {"xs": scalar(0.05, np.float32), "xz": scalar(100, np.uint8), "w": i8(mo, c // groups, 3, 3),
                                   "ws": scales(mo), "wz": np.zeros(mo, np.int8), "ys": scalar(0.2, np.float32),
                                   "yz": scalar(90, np.uint8), "B": rng.integers(-2000, 2000, mo).astype(np.int32)})
    case("qlinearconv_s8_depthwise",
         helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"], group=c, pads=[1, 1, 1, 1]),
         {"x": i8(1, c, 9, 9)}, {"xs": scalar(0.05, np.float32), "xz": scalar(-5, np.int8), "w": i8(c, 1, 3, 3),
                                 "ws": scalar(0.01, np.float32), "wz": scalar(0, np.int8), "ys": scalar(0.1, np.float32),
                                 "yz": scalar(3, np.int8)})
    # (onnxruntime's ConvInteger takes per-tensor weight zero points only; per channel is in the node tests.)
    case("convinteger_strided", helper.make_node("ConvInteger", ["x", "w", "xz", "wz"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2]),
         {"x": u8(1, 3, 10, 10)}, {"w": u8(4, 3, 3, 3), "xz": scalar(128, np.uint8), "wz": scalar(77, np.uint8)})
    x = rng.standard_normal((2, 4, 5)).astype(np.float32) * 3
    case("quantize_per_axis_s8", helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], axis=1), {"x": x},
         {"s": scales(4) * 5, "z": np.array([0, -3, 7, 100], np.int8)})
    case("dequantize_per_axis_s8", helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"], axis=-1),
         {"x": i8(2, 4, 5)}, {"s": scales(5), "z": i8(5)})
    case("quantize_blocked_s8", helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], axis=2, block_size=2),
         {"x": x}, {"s": scales(2, 4, 3) * 5, "z": i8(2, 4, 3)})
    case("dynamicquantize", helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"]), {"x": x}, {}, opset=11)
    # QOperator models max-pool int8 tensors directly.
    case("maxpool_s8", helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
         {"x": i8(2, 3, 9, 8)}, {}, opset=13)


class Reader(CalibrationDataReader):
    def __init__(self, name: str, samples: list[np.ndarray]):
        self.items = iter([{name: s} for s in samples])

    def get_next(self):
        return next(self.items, None)


def quantized(model: onnx.ModelProto, variant: str, calib: list[np.ndarray], tmp: str) -> onnx.ModelProto:
    src, dst = os.path.join(tmp, "float.onnx"), os.path.join(tmp, "quant.onnx")
    onnx.save(model, src)
    name = model.graph.input[0].name
    if variant == "dynamic":
        quantize_dynamic(src, dst, op_types_to_quantize=["Conv", "MatMul"], weight_type=QuantType.QUInt8)
    else:
        fmt = QuantFormat.QOperator if variant.startswith("qop") else QuantFormat.QDQ
        kw = {
            "qdq_u8s8": dict(activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True),
            "qdq_s8s8": dict(activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=False),
            # QOperator ops outside the default domain (QLinearAdd, QLinearConcat, QLinearGlobalAveragePool,
            # ...) are left out: only Conv, MatMul and MaxPool run on quantized tensors.
            "qop": dict(activation_type=QuantType.QUInt8, weight_type=QuantType.QUInt8, per_channel=False,
                        op_types_to_quantize=["Conv", "MatMul", "MaxPool"]),
            "qop_s8s8": dict(activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["Conv", "MatMul", "MaxPool"]),
        }[variant]
        quantize_static(src, dst, Reader(name, calib), quant_format=fmt, reduce_range=True, **kw)
    return onnx.load(dst)


def write_case(d: str, model: onnx.ModelProto, x: np.ndarray, float_model: onnx.ModelProto | None,
               classes_axis: int | None = None) -> None:
    os.makedirs(d)
    with open(os.path.join(d, "model.onnx"), "wb") as f:
        f.write(model.SerializeToString())
    name = model.graph.input[0].name
    sess = session(model)
    outs = sess.run(None, {name: x})
    with open(os.path.join(d, "input_0.pb"), "wb") as f:
        f.write(numpy_helper.from_array(x, name).SerializeToString())
    for i, o in enumerate(outs):
        with open(os.path.join(d, f"output_{i}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(o, sess.get_outputs()[i].name).SerializeToString())
    if float_model is not None:
        ref = session(float_model).run(None, {name: x})[0]
        with open(os.path.join(d, "float_output_0.pb"), "wb") as f:
            f.write(numpy_helper.from_array(ref, "float").SerializeToString())
    with open(os.path.join(d, "meta.txt"), "w") as f:
        f.write(f"input {name}\n")
        if classes_axis is not None:
            f.write(f"classes_axis {classes_axis}\n")


def write(out_dir: str) -> None:
    parent = os.path.dirname(out_dir) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
    work = tempfile.mkdtemp(prefix=".work-", dir=parent)
    try:
        rng = np.random.default_rng(0)
        # name: (float model, input shape without the batch, quantized variants, axis of the classes)
        floats = {
            "squeezenet": (light_model("squeezenet", 96, 11), (3, 96, 96),
                           ["qdq_u8s8", "qdq_s8s8", "qop", "qop_s8s8", "dynamic"], 1),
            # QOperator only: see the module docstring.
            "shufflenet": (light_model("shufflenet", None, 12), (3, 224, 224), ["qop"], 1),
            "cnn": (cnn(), (3, 32, 32), ["qdq_u8s8", "qdq_s8s8", "qop", "dynamic"], 1),
            "crnn_lstm": (crnn("LSTM"), (1, 8, 32), ["dynamic"], 2),
            "crnn_gru": (crnn("GRU"), (1, 8, 32), [], 2),
        }
        for name, (model, shape, variants, axis) in floats.items():
            calib = [rng.standard_normal((1, *shape)).astype(np.float32) for _ in range(4)]
            x = rng.standard_normal((BATCH, *shape)).astype(np.float32)
            write_case(os.path.join(tmp, name), model, x, None, axis)
            for v in variants:
                write_case(os.path.join(tmp, f"{name}.{v}"), quantized(model, v, calib, work), x, model, axis)
        for cell in ["LSTM", "GRU", "RNN"]:
            m = recurrent_edges(cell)
            shape = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
            write_case(os.path.join(tmp, f"{cell.lower()}_edges"), m, rng.standard_normal(shape).astype(np.float32), None)
        op_cases(os.path.join(tmp, "ops"))
        with open(os.path.join(tmp, "COMPLETE"), "w") as f:
            f.write("ok\n")
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.rename(tmp, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=None)
    a = p.parse_args()
    cache = os.environ.get("FLYWHEEL_CACHE") or os.path.expanduser("~/.cache/flywheel")
    out_dir = a.out or os.path.join(cache, "runtime-models",
                                    f"quant-{GENERATOR_VERSION}-onnx{onnx.__version__}-ort{ort.__version__}")
    if not os.path.exists(os.path.join(out_dir, "COMPLETE")):
        write(out_dir)
    print(out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
