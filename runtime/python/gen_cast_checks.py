"""Generate exhaustive Cast checks for the element types the runtime holds in another dtype
(float8 E4M3FN/E4M3FNUZ/E5M2/E5M2FNUZ, float4 E2M1, float8 E8M0, int4/uint4, int2/uint2).

The ONNX node tests cast only 15 values per type; these cast every float16 value, 300,000
random float32 bit patterns, every rounding midpoint of each format (and its float32
neighbours), +-0, NaN and +-Inf, from float32, float16 and float64, with expected outputs from
the ONNX reference (onnx.numpy_helper.saturate_cast / ml_dtypes / to_float8e8m0), plus the
decoding of every code back to float32/float16/float64. Same layout as the node tests
(<test>/model.onnx + test_data_set_0/input_0.pb, output_0.pb); the runtime must match exactly.

Left out on purpose: float -> int4/int2 out of range (undefined in ONNX) and Inf -> E8M0 (the
spec's table says E8M0_MAX, the reference gives NaN; the runtime follows the spec).

Usage: python gen_cast_checks.py [--out DIR]   (prints the directory it filled)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

import ml_dtypes
import numpy as np
import onnx
from onnx import TensorProto, helper
from onnx.numpy_helper import saturate_cast, to_float8e8m0

GENERATOR_VERSION = 1

TARGETS = {
    "FLOAT8E4M3FN": ml_dtypes.float8_e4m3fn,
    "FLOAT8E4M3FNUZ": ml_dtypes.float8_e4m3fnuz,
    "FLOAT8E5M2": ml_dtypes.float8_e5m2,
    "FLOAT8E5M2FNUZ": ml_dtypes.float8_e5m2fnuz,
    "FLOAT4E2M1": ml_dtypes.float4_e2m1fn,
    "INT4": ml_dtypes.int4,
    "UINT4": ml_dtypes.uint4,
    "INT2": ml_dtypes.int2,
    "UINT2": ml_dtypes.uint2,
}


def default_out() -> str:
    cache = os.environ.get("FLYWHEEL_CACHE") or os.path.expanduser("~/.cache/flywheel")
    key = f"v{GENERATOR_VERSION}-onnx-{onnx.__version__}-ml_dtypes-{ml_dtypes.__version__}"
    return os.path.join(cache, "runtime-cast-checks", key)


def float_inputs(rng: np.random.Generator) -> np.ndarray:
    random_bits = rng.integers(0, 2**32, size=300_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    all_f16 = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
    special = np.array([0.0, -0.0, np.nan, -np.nan, np.inf, -np.inf, 1e-7, -1e-7, 1e6, -1e6], dtype=np.float32)
    mids = []
    for t in list(TARGETS.values())[:5]:
        n = 16 if t == ml_dtypes.float4_e2m1fn else 256
        v = np.arange(n, dtype=np.uint8).view(t).astype(np.float64)
        v = np.unique(v[np.isfinite(v)])
        m = ((v[1:] + v[:-1]) / 2).astype(np.float32)
        mids += [m, np.nextafter(m, np.float32(np.inf)), np.nextafter(m, np.float32(-np.inf))]
    return np.concatenate([random_bits, all_f16, special, *mids])


def packed(name: str, ty: int, a: np.ndarray) -> onnx.TensorProto:
    if ty in (TensorProto.INT4, TensorProto.UINT4, TensorProto.FLOAT4E2M1):
        return helper.make_tensor(name, ty, a.shape, onnx.numpy_helper._pack_4bitx2(a).tobytes(), raw=True)
    if ty in (TensorProto.INT2, TensorProto.UINT2):
        return helper.make_tensor(name, ty, a.shape, onnx.numpy_helper._pack_2bitx4(a).tobytes(), raw=True)
    return helper.make_tensor(name, ty, a.shape, a, raw=True)


def write(root: str, name: str, node: onnx.NodeProto, x: np.ndarray, xtype: int, y: np.ndarray, ytype: int) -> None:
    d = os.path.join(root, name)
    os.makedirs(os.path.join(d, "test_data_set_0"))
    graph = helper.make_graph(
        [node], name, [helper.make_tensor_value_info("input", xtype, list(x.shape))], [helper.make_tensor_value_info("output", ytype, list(y.shape))]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 25)])
    model.ir_version = 11
    onnx.save(model, os.path.join(d, "model.onnx"))
    with open(os.path.join(d, "test_data_set_0", "input_0.pb"), "wb") as f:
        f.write(packed("input", xtype, x).SerializeToString())
    with open(os.path.join(d, "test_data_set_0", "output_0.pb"), "wb") as f:
        f.write(packed("output", ytype, y).SerializeToString())


def generate(root: str) -> None:
    rng = np.random.default_rng(0)
    f32 = float_inputs(rng)
    f16 = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16)
    f64 = np.concatenate([f32.astype(np.float64), rng.normal(0, 300, 100_000), rng.normal(0, 1e-3, 100_000)])
    for src_name, src, src_type in [("FLOAT", f32, TensorProto.FLOAT), ("FLOAT16", f16, TensorProto.FLOAT16), ("DOUBLE", f64, TensorProto.DOUBLE)]:
        for to_name, t in TARGETS.items():
            to_type = getattr(TensorProto, to_name)
            for saturate in [1, 0] if to_name.startswith("FLOAT8") else [1]:
                x = src
                with np.errstate(invalid="ignore"):
                    if to_name.startswith("FLOAT8"):
                        y = saturate_cast(x, t) if saturate else x.astype(t)
                    elif to_name == "FLOAT4E2M1":
                        y = x.astype(t)
                    else:
                        x = x[np.isfinite(x) & (np.abs(x.astype(np.float64)) < 2**31)]
                        y = x.astype(t)
                node = helper.make_node("Cast", ["input"], ["output"], to=to_type, saturate=saturate)
                write(root, f"cast_{src_name}_to_{to_name}_saturate{saturate}", node, x, src_type, y, to_type)
        for mode in ["up", "down", "nearest"]:
            x = src[~np.isinf(src.astype(np.float32))]
            x = np.abs(x).astype(src.dtype)
            y = to_float8e8m0(x, saturate=True, round_mode=mode)
            node = helper.make_node("Cast", ["input"], ["output"], to=TensorProto.FLOAT8E8M0, saturate=1, round_mode=mode)
            write(root, f"cast_{src_name}_to_FLOAT8E8M0_{mode}", node, x, src_type, y, TensorProto.FLOAT8E8M0)
    for from_name, t in [*TARGETS.items(), ("FLOAT8E8M0", ml_dtypes.float8_e8m0fnu)]:
        bits = 4 if from_name in ("INT4", "UINT4", "FLOAT4E2M1") else 2 if from_name in ("INT2", "UINT2") else 8
        codes = np.arange(1 << bits, dtype=np.uint8)
        if bits == 8:
            x = codes.view(t)
        elif from_name in ("INT4", "INT2"):
            x = ((codes.astype(np.int8) << (8 - bits)) >> (8 - bits)).astype(t)
        else:
            x = codes.view(t) if from_name == "FLOAT4E2M1" else codes.astype(t)
        for to_name, np_type in [("FLOAT", np.float32), ("FLOAT16", np.float16), ("DOUBLE", np.float64)]:
            node = helper.make_node("Cast", ["input"], ["output"], to=getattr(TensorProto, to_name))
            write(root, f"decode_{from_name}_to_{to_name}", node, x, getattr(TensorProto, from_name), x.astype(np_type), getattr(TensorProto, to_name))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=default_out())
    out = parser.parse_args().out
    if os.path.exists(os.path.join(out, "COMPLETE")):
        print(out)
        return 0
    parent = os.path.dirname(out) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
    try:
        with np.errstate(invalid="ignore", over="ignore"):
            generate(tmp)
        open(os.path.join(tmp, "COMPLETE"), "w").close()
        if os.path.exists(out):
            shutil.rmtree(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
