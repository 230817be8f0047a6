"""Runs an ONNX model in onnxruntime on a raw float32 input and writes the first output.

Usage: compare_onnxruntime.py MODEL INPUT_BIN SHAPE(comma-separated) OUTPUT_BIN
Prints the output shape (comma-separated) on stdout.
"""
import sys

import numpy as np
import onnx
import onnxruntime as ort


def main() -> None:
    model_path, input_path, shape, output_path = sys.argv[1:5]
    onnx.checker.check_model(onnx.load(model_path), full_check=True)
    x = np.fromfile(input_path, dtype=np.float32).reshape([int(d) for d in shape.split(",")])
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    (y,) = session.run([session.get_outputs()[0].name], {session.get_inputs()[0].name: x})[:1]
    np.ascontiguousarray(y, dtype=np.float32).tofile(output_path)
    print(",".join(str(d) for d in y.shape))


if __name__ == "__main__":
    main()
