"""Runs inferences against the server with Triton's own HTTP client (tritonclient[http]).

Usage: python triton_infer.py HOST:PORT MODEL
Exits non-zero (with the reason) when anything differs from what the server must answer.
"""

import sys

import numpy as np
import tritonclient.http as httpclient


def main():
    url, model = sys.argv[1], sys.argv[2]
    client = httpclient.InferenceServerClient(url=url)
    assert client.is_server_live(), "server not live"
    assert client.is_server_ready(), "server not ready"
    assert client.is_model_ready(model), "model not ready"
    meta = client.get_model_metadata(model)
    assert meta["inputs"][0]["name"] == "images", meta
    batch = np.zeros((2, 3, 64, 64), dtype=np.float32)
    batch[0, 0] = 1.0  # red
    batch[1, 2] = 1.0  # blue
    for binary in (True, False):
        inp = httpclient.InferInput("images", list(batch.shape), "FP32")
        inp.set_data_from_numpy(batch, binary_data=binary)
        out = httpclient.InferRequestedOutput("logits", binary_data=binary)
        result = client.infer(model, [inp], outputs=[out])
        logits = result.as_numpy("logits")
        assert logits.shape == (2, 3), logits.shape
        assert list(logits.argmax(axis=1)) == [0, 2], logits
    # Without requested outputs: the client asks for binary outputs at request level.
    inp = httpclient.InferInput("images", list(batch.shape), "FP32")
    inp.set_data_from_numpy(batch)
    logits = client.infer(model, [inp]).as_numpy("logits")
    assert list(logits.argmax(axis=1)) == [0, 2], logits
    # Errors surface as exceptions with the server's message.
    try:
        client.infer("missing-model", [inp])
        raise AssertionError("unknown model accepted")
    except httpclient.InferenceServerException as e:
        assert "unknown model" in str(e), e
    print("tritonclient OK")


if __name__ == "__main__":
    main()
