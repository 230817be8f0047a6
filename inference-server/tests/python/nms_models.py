"""A real detector exported with NMS inside the graph, as `yolo export ... nms=True` and the
TensorRT/onnx-graphsurgeon "end2end" scripts make them: nudenet's YOLOv8n (`320n.onnx`, see
real_models.py) with its head followed by the standard ONNX post-processing

    output0 [1, 4 + 18, A] -> Transpose -> boxes (centre, size) [1, A, 4], scores [1, 18, A]
    -> NonMaxSuppression (center_point_box=1, 100 per class, IoU 0.45, score 0.25)
    -> Gather -> det_boxes [1, K, 4] (corners, input pixels), det_scores [1, K], det_classes [1, K]

and what onnxruntime answers on the photos: the expected shapes are its kept detections, as
labels, scores and corner boxes (the photos are 320x320, so input pixels are image pixels).

Usage: python nms_models.py OUT_DIR   (writes 320n_nms.onnx, the photos and expected.json)
"""

import json
import os
import shutil
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from real_models import NUDENET_LABELS, fetch, nearest, read_png  # noqa: E402
from export_layouts import png_bytes  # noqa: E402

IOU, SCORE, PER_CLASS = 0.45, 0.25, 100


def with_nms(model):
    g = model.graph
    head = g.output[0].name

    def c(name, values, dtype=np.int64):
        g.initializer.append(numpy_helper.from_array(np.array(values, dtype=dtype), name))

    for name, values in [("nms_starts_boxes", [0]), ("nms_ends_boxes", [4]), ("nms_starts_scores", [4]),
                         ("nms_ends_scores", [4 + len(NUDENET_LABELS)]), ("nms_axis1", [1]), ("nms_axis2", [2]),
                         ("nms_max", [PER_CLASS]), ("nms_col0", [0]), ("nms_col1", [1]), ("nms_col2", [2]),
                         ("nms_flat", [-1]), ("nms_classes", len(NUDENET_LABELS))]:
        c(name, values)
    c("nms_iou", [IOU], np.float32)
    c("nms_score", [SCORE], np.float32)
    c("nms_half", [0.5], np.float32)
    nodes = [
        helper.make_node("Slice", [head, "nms_starts_boxes", "nms_ends_boxes", "nms_axis1"], ["nms_cxcywh_t"]),
        helper.make_node("Transpose", ["nms_cxcywh_t"], ["nms_cxcywh"], perm=[0, 2, 1]),
        helper.make_node("Slice", [head, "nms_starts_scores", "nms_ends_scores", "nms_axis1"], ["nms_scores"]),
        helper.make_node("NonMaxSuppression", ["nms_cxcywh", "nms_scores", "nms_max", "nms_iou", "nms_score"],
                         ["nms_selected"], center_point_box=1),
        # selected rows are (batch, class, anchor)
        helper.make_node("Gather", ["nms_selected", "nms_col1"], ["nms_class_col"], axis=1),
        helper.make_node("Gather", ["nms_selected", "nms_col2"], ["nms_anchor_col"], axis=1),
        helper.make_node("Squeeze", ["nms_class_col", "nms_axis1"], ["nms_class"]),
        helper.make_node("Squeeze", ["nms_anchor_col", "nms_axis1"], ["nms_anchor"]),
        # boxes of the kept anchors, centre/size -> corners
        helper.make_node("Gather", ["nms_cxcywh", "nms_anchor"], ["nms_kept_cxcywh"], axis=1),
        helper.make_node("Slice", ["nms_kept_cxcywh", "nms_col0", "nms_col2", "nms_axis2"], ["nms_cxcy"]),
        helper.make_node("Slice", ["nms_kept_cxcywh", "nms_col2", "nms_ends_boxes", "nms_axis2"], ["nms_wh"]),
        helper.make_node("Mul", ["nms_wh", "nms_half"], ["nms_half_wh"]),
        helper.make_node("Sub", ["nms_cxcy", "nms_half_wh"], ["nms_x1y1"]),
        helper.make_node("Add", ["nms_cxcy", "nms_half_wh"], ["nms_x2y2"]),
        helper.make_node("Concat", ["nms_x1y1", "nms_x2y2"], ["det_boxes"], axis=2),
        # the kept scores: scores[0, class, anchor]
        helper.make_node("Transpose", ["nms_scores"], ["nms_scores_t"], perm=[0, 2, 1]),
        helper.make_node("Squeeze", ["nms_scores_t", "nms_col0"], ["nms_scores_ac"]),
        helper.make_node("Reshape", ["nms_scores_ac", "nms_flat"], ["nms_scores_flat"]),
        helper.make_node("Mul", ["nms_anchor", "nms_classes"], ["nms_row_start"]),
        helper.make_node("Add", ["nms_row_start", "nms_class"], ["nms_flat_index"]),
        helper.make_node("Gather", ["nms_scores_flat", "nms_flat_index"], ["nms_score_1d"], axis=0),
        helper.make_node("Unsqueeze", ["nms_score_1d", "nms_col0"], ["det_scores"]),
        helper.make_node("Unsqueeze", ["nms_class", "nms_col0"], ["det_classes"]),
    ]
    g.node.extend(nodes)
    del g.output[:]
    g.output.extend([
        helper.make_tensor_value_info("det_boxes", TensorProto.FLOAT, [1, "K", 4]),
        helper.make_tensor_value_info("det_scores", TensorProto.FLOAT, [1, "K"]),
        helper.make_tensor_value_info("det_classes", TensorProto.INT64, [1, "K"]),
    ])
    onnx.checker.check_model(model)
    return model


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        fetch(tmp)
        for name in ("astronaut.png", "coffee.png"):
            shutil.copy(os.path.join(tmp, name), os.path.join(out, name))
        model = with_nms(onnx.load(os.path.join(tmp, "320n.onnx")))
    path = os.path.join(out, "320n_nms.onnx")
    onnx.save(model, path)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0].name
    expected = {"320n_nms": {"input": inp, "outputs": [o.name for o in sess.get_outputs()]}}
    for k in ("astronaut", "coffee"):
        small = nearest(read_png(os.path.join(out, f"{k}.png")), 320)
        with open(os.path.join(out, f"{k}_320.png"), "wb") as f:
            f.write(png_bytes(small))
        x = (small.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
        boxes, scores, classes = sess.run(None, {inp: x})
        shapes = [
            {"label": NUDENET_LABELS[int(c)], "confidence": float(s), "box": [float(v) for v in b]}
            for b, s, c in zip(boxes[0], scores[0], classes[0])
        ]
        expected["320n_nms"][k] = {
            "raw": {"det_boxes": boxes.reshape(-1).tolist(), "det_scores": scores.reshape(-1).tolist(),
                    "det_classes": classes.reshape(-1).astype(float).tolist()},
            "shapes": shapes,
        }
    with open(os.path.join(out, "expected.json.part"), "w") as f:
        json.dump(expected, f)
    os.replace(os.path.join(out, "expected.json.part"), os.path.join(out, "expected.json"))
    print(out)


if __name__ == "__main__":
    main()
