"""Models in the output layouts real exporters produce, the images to send them, and what
onnxruntime plus an independent reference decoder make of those images.

The graphs are small (64x64 RGB in, a coloured square in the image decides the answer), but
their outputs have exactly the shapes and semantics of:

- softmax_classifier.onnx: a classifier whose graph ends in Softmax ([N, 3] probabilities,
  as torchvision/Keras exports with the activation included)
- yolov5.onnx: YOLOv5/YOLOv7 ([N, A, 5 + C]: cx, cy, w, h in input pixels, objectness, class
  scores)
- yolox.onnx: YOLOX with decode_in_inference=False ([N, A, 5 + C] over strides 8, 16, 32:
  x, y offsets in grid cells, log w, log h, sigmoid objectness and class scores; the grid decode
  is the server's)
- ssd.onnx: SSD/RetinaNet-style separate outputs, `boxes` [N, A, 4] (x1, y1, x2, y2 as
  fractions of the input) and `scores` [N, A, C]

expected.json holds, per model and image, onnxruntime's raw outputs and the shapes the
reference decoder (below, written from the exporters' documented post-processing, not from
the server's code) keeps at the threshold.

Usage: python export_layouts.py OUT_DIR
"""

import json
import os
import struct
import sys
import zlib

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

SIZE = 64
LABELS = ["red", "blue"]
THRESHOLD = 0.3
IOU = 0.45


def model(nodes, inits, outputs, name):
    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs]
    inits = [numpy_helper.from_array(np.asarray(a) if np.asarray(a).dtype == np.int64 else np.asarray(a, np.float32), n)
             for n, a in inits]
    g = helper.make_graph(nodes, name, [inp], outs, initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


# Per-cell class logits from the mean colour of the cell: red and blue squares.
CLS_W = np.array([[12, -12, -12], [-12, -12, 12]], dtype=np.float32).reshape(2, 3, 1, 1)
CLS_B = np.array([-3, -3], dtype=np.float32)
# Objectness: any coloured cell.
OBJ_W = np.array([[8, -8, 8]], dtype=np.float32).reshape(1, 3, 1, 1)
OBJ_B = np.array([-2], dtype=np.float32)


def cells(stride):
    """Centre x, centre y of each cell of a stride, row-major."""
    g = SIZE // stride
    ys, xs = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
    return (xs.reshape(-1) + 0.5) * stride, (ys.reshape(-1) + 0.5) * stride


def per_cell(prefix, stride, channels_last=True):
    """Nodes computing, per cell of `stride`: pooled colour, class logits, objectness logit,
    and a zero tensor [N, A, 1] that ties constants to the batch size."""
    g = SIZE // stride
    a = g * g
    n = [
        helper.make_node("AveragePool", ["images"], [f"{prefix}pool"], kernel_shape=[stride, stride], strides=[stride, stride]),
        helper.make_node("Conv", [f"{prefix}pool", "cls_w", "cls_b"], [f"{prefix}cls4"], kernel_shape=[1, 1]),
        helper.make_node("Conv", [f"{prefix}pool", "obj_w", "obj_b"], [f"{prefix}obj4"], kernel_shape=[1, 1]),
        helper.make_node("Conv", [f"{prefix}pool", "zero_w", "zero_b"], [f"{prefix}zero4"], kernel_shape=[1, 1]),
    ]
    for t, c in [("cls", 2), ("obj", 1), ("zero", 1)]:
        n.append(helper.make_node("Reshape", [f"{prefix}{t}4", f"shape_{c}_{a}"], [f"{prefix}{t}_cf"]))
        n.append(helper.make_node("Transpose", [f"{prefix}{t}_cf"], [f"{prefix}{t}"], perm=[0, 2, 1]))
    return n, a


def shape_inits(anchors):
    out = []
    for a in anchors:
        for c in (1, 2):
            out.append((f"shape_{c}_{a}", np.array([0, c, a], dtype=np.int64)))
    return out


def common_inits():
    return [("cls_w", CLS_W), ("cls_b", CLS_B), ("obj_w", OBJ_W), ("obj_b", OBJ_B),
            ("zero_w", np.zeros((1, 3, 1, 1))), ("zero_b", np.zeros(1))]


def finish(nodes, inits, shapes, outputs, name):
    """`model` with the int64 shape initializers of `shape_inits`."""
    return model(nodes, inits + shapes, outputs, name)


def softmax_classifier():
    nodes = [
        helper.make_node("GlobalAveragePool", ["images"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "w", "b"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    # Moderate weights: a second softmax would visibly flatten these probabilities.
    w = np.array([[3, 0, 0], [0, 0, 3]], dtype=np.float32)
    return model(nodes, [("w", w), ("b", np.zeros(2))], [("probs", ["N", 2])], "softmax_classifier")


def yolov5():
    nodes, a = per_cell("p", 8)
    cx, cy = cells(8)
    box = np.stack([cx, cy, np.full(a, 8.0), np.full(a, 8.0)], axis=1)[None]  # [1, A, 4]
    nodes += [
        helper.make_node("Sigmoid", ["pcls"], ["cls_p"]),
        helper.make_node("Sigmoid", ["pobj"], ["obj_p"]),
        helper.make_node("Add", ["pzero", "box"], ["boxes"]),
        helper.make_node("Concat", ["boxes", "obj_p", "cls_p"], ["output0"], axis=2),
    ]
    return finish(nodes, common_inits() + [("box", box)], shape_inits([a]), [("output0", ["N", a, 7])], "yolov5")


def yolox():
    nodes, parts, offsets = [], [], []
    for s in (8, 16, 32):
        n, a = per_cell(f"s{s}", s)
        nodes += n
        # Raw regression: offsets 0.5 (cell centre) and log size 0 (one stride), as trained.
        nodes += [
            helper.make_node("Add", [f"s{s}zero", "reg_raw"], [f"s{s}reg"]),
            helper.make_node("Sigmoid", [f"s{s}obj"], [f"s{s}obj_p"]),
            helper.make_node("Sigmoid", [f"s{s}cls"], [f"s{s}cls_p"]),
            helper.make_node("Concat", [f"s{s}reg", f"s{s}obj_p", f"s{s}cls_p"], [f"s{s}out"], axis=2),
        ]
        parts.append(f"s{s}out")
        offsets.append(a)
    nodes.append(helper.make_node("Concat", parts, ["output"], axis=1))
    reg = np.array([[[0.5, 0.5, 0.0, 0.0]]], dtype=np.float32)
    total = sum(offsets)
    return finish(nodes, common_inits() + [("reg_raw", reg)], shape_inits(offsets), [("output", ["N", total, 7])], "yolox")


def ssd():
    nodes, a = per_cell("p", 8)
    cx, cy = cells(8)
    box = np.stack([cx - 4, cy - 4, cx + 4, cy + 4], axis=1)[None] / SIZE
    nodes += [
        helper.make_node("Sigmoid", ["pcls"], ["scores"]),
        helper.make_node("Add", ["pzero", "box"], ["boxes"]),
    ]
    return finish(nodes, common_inits() + [("box", box)], shape_inits([a]),
                  [("boxes", ["N", a, 4]), ("scores", ["N", a, 2])], "ssd")


# --- images -------------------------------------------------------------------------------

def png_bytes(img):
    """A minimal RGB PNG writer (no dependency beyond zlib)."""
    h, w, _ = img.shape
    raw = b"".join(b"\x00" + img[y].astype(np.uint8).tobytes() for y in range(h))

    def chunk(kind, data):
        c = struct.pack(">I", len(data)) + kind + data
        return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def images():
    out = {}
    red = np.zeros((SIZE, SIZE, 3), np.uint8)
    red[16:32, 32:48] = [255, 0, 0]
    out["red_square"] = red
    both = np.zeros((SIZE, SIZE, 3), np.uint8)
    both[8:16, 8:16] = [0, 0, 255]
    both[40:56, 40:56] = [255, 0, 0]
    out["red_and_blue"] = both
    plain_red = np.full((SIZE, SIZE, 3), [220, 30, 30], np.uint8)
    out["reddish"] = plain_red
    plain_blue = np.full((SIZE, SIZE, 3), [30, 30, 220], np.uint8)
    out["bluish"] = plain_blue
    return out


# --- the reference decoders -----------------------------------------------------------------

def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def nms(dets):
    """Per-class greedy NMS, highest score first."""
    dets = sorted(dets, key=lambda d: -d["confidence"])
    kept = []
    for d in dets:
        if all(k["label"] != d["label"] or iou(k["box"], d["box"]) <= IOU for k in kept):
            kept.append(d)
    return kept[:100]


def cxcywh(cx, cy, w, h):
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def decode_rows(rows, objectness, labels=LABELS, threshold=None):
    """YOLO rows [A, 4 (+1) + C]: best class (times objectness), centre/size boxes, NMS."""
    threshold = THRESHOLD if threshold is None else threshold
    dets = []
    for r in rows:
        obj = r[4] if objectness else 1.0
        cls = r[5:] if objectness else r[4:]
        c = int(np.argmax(cls))
        score = float(cls[c] * obj)
        if score >= threshold:
            dets.append({"label": labels[c], "confidence": score, "box": cxcywh(*map(float, r[:4]))})
    return nms(dets)


def decode(name, outs):
    if name == "softmax_classifier":
        p = outs[0][0]
        order = np.argsort(-p)
        return [{"label": LABELS[i], "confidence": float(p[i])} for i in order if p[i] >= THRESHOLD]
    if name == "yolov5":
        return decode_rows(outs[0][0], True)
    if name == "yolox":
        rows, k = outs[0][0].copy(), 0
        for s in (8, 16, 32):
            g = SIZE // s
            for gy in range(g):
                for gx in range(g):
                    rows[k, 0] = (rows[k, 0] + gx) * s
                    rows[k, 1] = (rows[k, 1] + gy) * s
                    rows[k, 2] = np.exp(rows[k, 2]) * s
                    rows[k, 3] = np.exp(rows[k, 3]) * s
                    k += 1
        return decode_rows(rows, True)
    if name == "ssd":
        boxes, scores = outs[0][0], outs[1][0]
        dets = []
        for b, sc in zip(boxes, scores):
            c = int(np.argmax(sc))
            if sc[c] >= THRESHOLD:
                dets.append({"label": LABELS[c], "confidence": float(sc[c]), "box": [float(v) * SIZE for v in b]})
        return nms(dets)
    raise ValueError(name)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    builders = {"softmax_classifier": softmax_classifier, "yolov5": yolov5, "yolox": yolox, "ssd": ssd}
    imgs = images()
    for k, img in imgs.items():
        with open(os.path.join(out, f"{k}.png"), "wb") as f:
            f.write(png_bytes(img))
    expected = {}
    for name, build in builders.items():
        m = build()
        path = os.path.join(out, f"{name}.onnx")
        onnx.save(m, path)
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        expected[name] = {}
        for k, img in imgs.items():
            x = (img.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
            outs = sess.run(None, {"images": x})
            names = [o.name for o in sess.get_outputs()]
            expected[name][k] = {
                "shapes": decode(name, outs),
                "raw": {n: o[0].reshape(-1).tolist() for n, o in zip(names, outs)},
            }
    with open(os.path.join(out, "expected.json.part"), "w") as f:
        json.dump(expected, f, indent=1)
    os.replace(os.path.join(out, "expected.json.part"), os.path.join(out, "expected.json"))
    print(out)


if __name__ == "__main__":
    main()
