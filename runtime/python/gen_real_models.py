"""Real exported vision models for the benchmark and the profiler, from PyPI packages only.

- nudenet 3.4.2 ships `320n.onnx`, an Ultralytics YOLOv8n export (dynamic batch and size; run
  at 320x320). Taken from the inference server's test cache when it is there, otherwise fetched
  with `pip download --no-deps` (the package registry, never a model hub).
- the installed `onnx` wheel ships its backend tests' light models (Caffe2 exports of real
  architectures, 224x224) with placeholder weights; `gen_quant_models.light_model` gives them
  deterministic random weights, calibrated BatchNorm statistics and a dynamic batch
  (Inception v1 is left out: its final Reshape does not fit once its weights are replaced).

Writes `<name>.onnx` per model plus `models.json` ({name: [C, H, W]}) into
$FLYWHEEL_CACHE/runtime-models/real-v2-onnx<v>-ort<v>/ and prints that directory.

Usage: python gen_real_models.py
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

import onnx
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_quant_models import light_model  # noqa: E402

VERSION = "real-v2"
# name -> (light file name or None for the YOLOv8n, input [C, H, W], seed)
MODELS = {
    "yolov8n_320": (None, [3, 320, 320], 0),
    "resnet50": ("resnet50", [3, 224, 224], 21),
    "densenet121": ("densenet121", [3, 224, 224], 22),
    "inception_v2": ("inception_v2", [3, 224, 224], 24),
    "shufflenet": ("shufflenet", [3, 224, 224], 25),
    "squeezenet": ("squeezenet", [3, 224, 224], 26),
}


def cache() -> str:
    return os.environ.get("FLYWHEEL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "flywheel")


def yolov8n(dest: str) -> None:
    found = sorted(glob.glob(os.path.join(cache(), "server-real-models", "*", "320n.onnx")))
    if found:
        shutil.copyfile(found[0], dest)
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--dest", tmp, "nudenet==3.4.2"], check=True)
        wheel = zipfile.ZipFile(glob.glob(os.path.join(tmp, "nudenet-*.whl"))[0])
        with open(dest, "wb") as f:
            f.write(wheel.read("nudenet/320n.onnx"))


def main() -> None:
    out = os.path.join(cache(), "runtime-models", f"{VERSION}-onnx{onnx.__version__}-ort{ort.__version__}")
    if os.path.exists(os.path.join(out, "models.json")):
        print(out)
        return
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = tempfile.mkdtemp(dir=os.path.dirname(out))
    shapes = {}
    for name, (light, chw, seed) in MODELS.items():
        dest = os.path.join(tmp, f"{name}.onnx")
        if light is None:
            yolov8n(dest)
        else:
            onnx.save(light_model(light, chw[1], seed), dest)
        shapes[name] = chw
    with open(os.path.join(tmp, "models.json"), "w") as f:
        json.dump(shapes, f)
    try:
        os.rename(tmp, out)
    except OSError:
        shutil.rmtree(tmp)  # another process got there first
    print(out)


if __name__ == "__main__":
    main()
