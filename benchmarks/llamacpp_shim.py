"""An OpenAI-compatible ``/v1/completions`` endpoint whose forward pass is llama.cpp's (llama-cpp-python).

Run by ``benchmarks/llamacpp_endpoint.py`` with the Python of an environment holding ``llama_cpp`` (built from
source: it is not in this project's extras), as ``python shim.py MODEL.gguf NAME N_CTX``; prints the port it
listens on (127.0.0.1), then serves until killed. llama-cpp-python's own server takes text prompts only (its
``echo`` joins the prompt to the answer as strings), while ``pawprint audit endpoint`` sends token ids; this
shim accepts token ids, evaluates them with ``Llama.eval`` (llama.cpp's kernels and its GGUF loader and
dequantisers: nothing of pawprint's) and answers ``echo`` + ``logprobs`` as OpenAI's legacy Completions API does.
Imports only the standard library, numpy and llama_cpp.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

import llama_cpp
import numpy as np


def main() -> None:
    path, name, n_ctx = sys.argv[1], sys.argv[2], int(sys.argv[3])
    llm = llama_cpp.Llama(model_path=path, logits_all=True, n_ctx=n_ctx, n_threads=1, verbose=False)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, doc: object) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": name, "object": "model"}]})
            else:
                self._send(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            if self.path.rstrip("/") != "/v1/completions":
                self._send(404, {"error": {"message": "not found"}})
                return
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            tokens = body["prompt"]
            if not (isinstance(tokens, list) and tokens and all(isinstance(t, int) for t in tokens)):
                self._send(400, {"error": {"message": "this endpoint takes a prompt of token ids"}})
                return
            llm.reset()
            llm.eval(tokens)
            scores = np.asarray(llm.scores[: len(tokens)], dtype=np.float64)
            top = scores.max(axis=1, keepdims=True)
            logp = scores - (top + np.log(np.exp(scores - top).sum(axis=1, keepdims=True)))
            values = [None] + [float(logp[i - 1, tokens[i]]) for i in range(1, len(tokens))]
            self._send(200, {"object": "text_completion", "model": name, "choices": [{
                "index": 0, "text": "", "finish_reason": "length",
                "logprobs": {"token_logprobs": values, "tokens": [str(t) for t in tokens]}}]})

    server = HTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
