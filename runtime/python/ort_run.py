"""Run a model with onnxruntime (the oracle): ort_run.py MODEL INPUT_PB OUT_DIR
Feeds the TensorProto in INPUT_PB to the model's first input and writes output_<i>.pb."""

import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper


def main() -> int:
    model, inp, out_dir = sys.argv[1:4]
    x = numpy_helper.to_array(onnx.load_tensor(inp))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    outs = sess.run(None, {sess.get_inputs()[0].name: x})
    os.makedirs(out_dir, exist_ok=True)
    for i, o in enumerate(outs):
        with open(os.path.join(out_dir, f"output_{i}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(np.asarray(o), sess.get_outputs()[i].name).SerializeToString())
    return 0


if __name__ == "__main__":
    sys.exit(main())
