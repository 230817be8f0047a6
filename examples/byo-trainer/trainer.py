#!/usr/bin/env python3
"""A minimal trainer of your own for Flywheel's DataPipeline (`continuousTraining.trainer`).

It follows the contract of docs/trainer.md, "Bring your own trainer":

1. read the TrainRequest JSON from the FLYWHEEL_REQUEST environment variable;
2. "train": load the base model's ONNX and add a tiny, seeded perturbation to its float
   weights with numpy (or, with --noise 0 or without the onnx package, copy it unchanged);
   a real trainer fine-tunes with its own framework here and exports ONNX;
3. write model.onnx under the request's outputUri, then result.json last (the commit marker
   the operator reads to register ModelVersion <pipeline>-rN);
4. exit 0 on success; on any failure print `error: ...` to stderr and exit 1, writing no
   result.json (the Job fails and the DataPipeline's TrainingSucceeded condition says so).

Storage: this example handles file:// URIs, plain paths and pvc://<claim>/<path> (the operator
mounts the claim at $FLYWHEEL_PVC_ROOT/<claim>, default /var/lib/flywheel/pvc). For s3://,
gs:// or az:// outputs use your framework's client with the AWS_* / GOOGLE_* / AZURE_*
variables the operator sets from the credentials Secret.

Dependencies: Python 3.9+, numpy and onnx (`pip install numpy onnx`).
"""

import argparse
import hashlib
import json
import os
import sys
import tempfile

RESULT_FILE = "result.json"
MODEL_FILE = "model.onnx"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


class TrainerError(Exception):
    """A failure to report: the message names the file or field at fault."""


def local_path(uri):
    """The local file system path of a file://, pvc:// or plain-path URI."""
    if uri.startswith("file://"):
        return uri[len("file://"):]
    if uri.startswith("pvc://"):
        root = os.environ.get("FLYWHEEL_PVC_ROOT", "/var/lib/flywheel/pvc")
        return os.path.join(root, uri[len("pvc://"):])
    if "://" in uri:
        raise TrainerError(f"{uri}: this example trainer reads and writes local files only (file://, pvc://)")
    return uri


def join(directory_uri, name):
    return directory_uri.rstrip("/") + "/" + name


def write_atomically(path, data):
    """Write then rename, so a killed run never leaves half a file."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix="." + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def frozen_objects(dataset, root):
    """A frozen version (spec.manifest, e.g. the feedback frozen when the run started): the
    paths of the objects it holds, each checked against its SHA-256. Read only these: the
    dataset at spec.uri keeps growing, and several versions share it."""
    manifest_path = os.path.join(root, dataset["spec"]["manifest"])
    try:
        with open(manifest_path, "rb") as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise TrainerError(f"dataset {dataset['name']}: manifest {manifest_path}: {e}")
    paths = []
    for sample in manifest["samples"]:
        for obj in sample["objects"]:
            path = os.path.join(root, obj["path"])
            try:
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            except OSError as e:
                raise TrainerError(f"dataset {dataset['name']}: {e}")
            if digest != obj["sha256"]:
                raise TrainerError(f"dataset {dataset['name']}: {path} changed since it was frozen")
            paths.append(obj["path"])
    return paths


def count_images(dataset):
    """Images in a DatasetVersion (any layout): what a real trainer would load."""
    root = local_path(dataset["spec"]["uri"])
    if not os.path.isdir(root):
        raise TrainerError(f"dataset {dataset['name']}: {root} is not a directory")
    if dataset["spec"].get("manifest"):
        return sum(1 for p in frozen_objects(dataset, root) if p.lower().endswith(IMAGE_EXTENSIONS))
    n = 0
    for _, _, files in os.walk(root):
        n += sum(1 for f in files if f.lower().endswith(IMAGE_EXTENSIONS))
    return n


def perturb(model_bytes, noise, seed):
    """The base model with every float initializer nudged by noise x its standard deviation.
    Returns the new bytes and the mean absolute change."""
    if noise == 0:
        return model_bytes, 0.0
    try:
        import numpy as np
        import onnx
        from onnx import numpy_helper
    except ImportError as e:
        raise TrainerError(f"--noise needs numpy and onnx ({e}); pass --noise 0 to copy the model unchanged")
    try:
        model = onnx.load_from_string(model_bytes)
    except Exception as e:  # noqa: BLE001 - any parse failure is the model's fault
        raise TrainerError(f"the base model is not ONNX: {e}")
    rng = np.random.default_rng(seed)
    changes = []
    for init in model.graph.initializer:
        weights = numpy_helper.to_array(init)
        if weights.dtype not in (np.float32, np.float64) or weights.size < 2:
            continue  # leave integer and scalar constants (shapes, strides) alone
        scale = float(weights.std()) * noise
        delta = rng.normal(0.0, scale, size=weights.shape).astype(weights.dtype)
        init.CopyFrom(numpy_helper.from_array(weights + delta, init.name))
        changes.append(float(np.abs(delta).mean()))
    onnx.checker.check_model(model)
    return model.SerializeToString(), (sum(changes) / len(changes) if changes else 0.0)


def train(request, noise, seed):
    base = request["baseModel"]
    artifact = base["spec"]["artifact"]
    model_path = local_path(artifact["uri"])
    try:
        with open(model_path, "rb") as f:
            base_bytes = f.read()
    except OSError as e:
        raise TrainerError(f"baseModel {base['name']}: {e}")
    want = artifact.get("sha256")
    if want and hashlib.sha256(base_bytes).hexdigest() != want.lower():
        raise TrainerError(f"baseModel {base['name']}: {artifact['uri']} does not match spec.artifact.sha256")

    train_samples = sum(count_images(d) for d in request["train"])
    eval_samples = count_images(request["eval"]) if request.get("eval") else 0
    hp = request["hyperparameters"]
    print(
        f"training {base['name']} on {train_samples} images ({', '.join(d['name'] for d in request['train'])}), "
        f"{hp['epochs']} epochs, lr {hp['learningRate']}, noise {noise}",
        file=sys.stderr,
    )
    new_bytes, change = perturb(base_bytes, noise, seed)

    output = request["outputUri"]
    model_uri = join(output, MODEL_FILE)
    write_atomically(local_path(model_uri), new_bytes)
    return {
        "modelUri": model_uri,
        "sha256": hashlib.sha256(new_bytes).hexdigest(),
        "sizeBytes": len(new_bytes),
        # A real trainer evaluates the base and the new model on `eval` (or its own split) and
        # reports e.g. {"mAP50": ...} or {"accuracy": ...}; this one measured only the change.
        "baseMetrics": {},
        "metrics": {"meanAbsWeightChange": change},
        "trainSamples": train_samples,
        "evalSamples": eval_samples,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", type=float, default=0.001, help="perturbation, x each tensor's std (0: copy)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--request", help="read the request from this file instead of $FLYWHEEL_REQUEST")
    args = parser.parse_args()
    try:
        if args.request:
            with open(args.request) as f:
                text = f.read()
        else:
            text = os.environ.get("FLYWHEEL_REQUEST")
            if not text:
                raise TrainerError("FLYWHEEL_REQUEST is not set (the operator sets it; or pass --request FILE)")
        try:
            request = json.loads(text)
        except json.JSONDecodeError as e:
            raise TrainerError(f"the request is not JSON: {e}")
        result_path = local_path(join(request["outputUri"], RESULT_FILE))
        if os.path.exists(result_path):
            # A retried Job whose previous attempt finished: the result stands.
            print(f"{result_path} exists: not training again", file=sys.stderr)
        else:
            result = train(request, args.noise, args.seed)
            write_atomically(result_path, json.dumps(result, indent=2).encode())  # last: the commit marker
        with open(result_path) as f:
            print(f.read())
        return 0
    except KeyError as e:
        print(f"error: the request has no field {e}", file=sys.stderr)
    except (TrainerError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
