"""Privacy: the bytes an owner sends never contain any piece of a checkpoint tensor.

A full submission runs through a channel whose interceptor records every request message as serialised
for the wire. No 32-byte window of any tensor of the checkpoint may occur in them. The check is exact and
fast: any 32-byte window of a tensor contains one of the tensor's 16-byte blocks at a 16-aligned offset, so
it is enough to look up every 16-byte window of the sent bytes among those blocks, and to compare the full
32-byte windows around the (rare) hits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc

from owner._client import submit
from owner._fingerprint import build_bundle
from tests.verifier.fixtures import Env, Keys, Models

pytest_plugins = ["tests.verifier.fixtures"]

WINDOW = 32
BLOCK = WINDOW // 2


class Recorder(grpc.UnaryUnaryClientInterceptor, grpc.StreamUnaryClientInterceptor):
    """Keeps the wire bytes of every request message sent through the channel."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        self.sent.append(request.SerializeToString())
        return continuation(details, request)

    def intercept_stream_unary(self, continuation: Callable[..., Any], details: Any, requests: Iterator[Any]) -> Any:
        def recorded() -> Iterator[Any]:
            for r in requests:
                self.sent.append(r.SerializeToString())
                yield r

        return continuation(details, recorded())


def checkpoint_tensors(model: Path) -> dict[str, bytes]:
    from safetensors.numpy import load_file

    return {name: a.tobytes() for name, a in load_file(str(model / "model.safetensors")).items()}


def leaked_windows(sent: bytes, tensors: dict[str, bytes]) -> list[tuple[str, int]]:
    """(tensor, offset) of every 32-byte window of a tensor that occurs in ``sent``."""
    blocks: dict[bytes, list[tuple[str, int]]] = {}
    for name, data in tensors.items():
        for a in range(0, len(data) - BLOCK + 1, BLOCK):
            blocks.setdefault(data[a : a + BLOCK], []).append((name, a))
    leaks = []
    for p in range(len(sent) - BLOCK + 1):
        for name, a in blocks.get(sent[p : p + BLOCK], ()):
            data = tensors[name]
            # every 32-byte window of the tensor that contains block [a, a+16), aligned with sent at p
            for o in range(max(0, a - BLOCK), min(a, len(data) - WINDOW) + 1):
                s = p - (a - o)
                if s >= 0 and sent[s : s + WINDOW] == data[o : o + WINDOW]:
                    leaks.append((name, o))
    return leaks


def test_the_detector_finds_a_planted_window(models: Models) -> None:
    tensors = checkpoint_tensors(models.derived)
    name = next(iter(tensors))
    planted = b"header" + tensors[name][1000 + 3 : 1000 + 3 + WINDOW] + b"trailer"
    assert (name, 1003) in leaked_windows(planted, tensors)
    broken = bytearray(planted)
    broken[6 + WINDOW // 2] ^= 0xFF  # one byte changed in the middle: no whole window is left
    assert leaked_windows(bytes(broken), tensors) == []


def test_no_window_of_any_checkpoint_tensor_is_sent(env: Env, models: Models) -> None:
    recorder = Recorder()
    channel = grpc.intercept_channel(env.channel, recorder)
    result = submit(models.derived, env.keys.owner, channel, env.keys.verifier.public_key, timeout_s=60)
    assert result.receipt.verdict == "derived"  # a real, complete submission went through
    sent = b"".join(recorder.sent)
    assert len(sent) > sum(t.shape[0] ** 2 * 4 for t in result.manifest.tensors)  # the terms were all sent
    tensors = checkpoint_tensors(models.derived)
    assert sum(len(t) for t in tensors.values()) > 500_000
    assert leaked_windows(sent, tensors) == []


def test_an_offline_bundle_holds_no_window_of_the_weights(models: Models, keys: Keys) -> None:
    bundle = build_bundle(models.base, keys.vendor, now=0)
    assert leaked_windows(bundle.to_bytes(), checkpoint_tensors(models.base)) == []
