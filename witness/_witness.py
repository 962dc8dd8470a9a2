"""A C2SP tlog-witness: cosigns a log's checkpoint only when it consistently extends the last one it cosigned.

``Witness.add_checkpoint`` is the whole protocol (https://c2sp.org/tlog-witness) on bytes, so it can be
tested without a socket; ``serve`` puts it behind ``POST /add-checkpoint`` on a ``ThreadingHTTPServer``.

For each log it knows (by origin and the log's C2SP verifier key) the witness keeps the latest checkpoint it
cosigned: size, root hash and time. A request names the size the log believes that is (``old``) and a
consistency proof from it:

- ``old`` is not the witness's size: **409** with the witness's size (``text/x.tlog.size``), so the log can
  retry with the right proof;
- the proof does not show the new tree extends the old one: **422** (this is a fork, or a rewritten history);
- same size but another root: **409** (a fork at the same size);
- the checkpoint is dated more than ``max_skew_s`` into the witness's future, or before the last checkpoint it
  cosigned for the log: **422** (pawprint's extension: a witness does not cosign a backdated checkpoint);
- an unknown origin: **404**; a note not signed by the log's key: **403**; a malformed request: **400**.

Otherwise it records the new checkpoint durably (an atomic file replace, fsynced) *before* it answers with its
cosignature (``200``, one signature line), so a restart never lets it cosign a fork of what it already cosigned.
One process per state file (an exclusive lock): two witnesses on one state could each cosign a different fork.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

from protocol import (
    CheckpointError,
    PrivateKey,
    ProofError,
    PublicKey,
    SignatureError,
    atomic_write,
    parse_checkpoint,
    verify_consistency,
)
from protocol._hashing import DIGEST_SIZE
from protocol._json import JsonError, loads_strict
from protocol._witness import (
    ADD_CHECKPOINT_PATH,
    MAX_CLOCK_SKEW_S,
    MAX_REQUEST_BYTES,
    SIZE_CONTENT_TYPE,
    cosign,
    parse_add_checkpoint,
    witness_signing_key,
    witness_verifier_key,
)

STATE_FORMAT = "pawprint/witness-state/v1"


class WitnessStateError(Exception):
    """The witness's state file is unreadable, malformed or in use by another witness process."""


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status, content type and body."""

    status: int
    content_type: str
    body: bytes


@dataclass(frozen=True)
class Latest:
    size: int
    root: bytes
    time: int


def _text(status: int, message: str) -> Answer:
    return Answer(status, "text/plain; charset=utf-8", (message + "\n").encode("utf-8"))


class Witness:
    """The witness named ``name`` (cosigning with the key derived from ``key``) for the logs ``logs``
    (origin -> the log's checkpoint key), its state in the file ``state``. ``clock`` gives Unix seconds."""

    def __init__(self, key: PrivateKey, name: str, logs: Mapping[str, PublicKey], state: str | os.PathLike[str],
                 *, clock: Callable[[], float], max_skew_s: int = MAX_CLOCK_SKEW_S) -> None:
        self._signer = witness_signing_key(key)
        self.name = name
        self.verifier_key = witness_verifier_key(name, self._signer.public_key)
        self._logs = dict(logs)
        self._path = Path(state)
        self._clock = clock
        self._max_skew = int(max_skew_s)
        self._lock = threading.Lock()
        self._lockfile: IO[bytes] | None = None
        self._take_lock()
        self._latest = self._load()

    @property
    def public_key(self) -> PublicKey:
        return self._signer.public_key

    def close(self) -> None:
        if self._lockfile is not None:
            self._lockfile.close()  # releases the flock
            self._lockfile = None

    def latest(self, origin: str) -> Latest | None:
        with self._lock:
            return self._latest.get(origin)

    # -- the protocol ----------------------------------------------------------------------------------
    def add_checkpoint(self, body: bytes) -> Answer:
        try:
            request = parse_add_checkpoint(body)
            signed = parse_checkpoint(request.note)
        except CheckpointError as e:  # WitnessError is one
            return _text(400, f"malformed add-checkpoint request: {e}")
        cp = signed.checkpoint
        log_key = self._logs.get(cp.origin)
        if log_key is None:
            return _text(404, f"unknown log {cp.origin!r:.100}")
        try:
            signed.verify_with(cp.origin, log_key)
        except (CheckpointError, SignatureError):
            return _text(403, "the checkpoint is not signed by the log's key")
        if request.old_size > cp.size:
            return _text(400, f"the old size {request.old_size} is larger than the checkpoint's {cp.size}")
        with self._lock:
            latest = self._latest.get(cp.origin)
            size = 0 if latest is None else latest.size
            if request.old_size != size:
                return Answer(409, SIZE_CONTENT_TYPE, f"{size}\n".encode("ascii"))
            if latest is not None and cp.size == latest.size:
                if request.proof:
                    return _text(400, "a request at the witness's own size carries no proof")
                if cp.root != latest.root:
                    return _text(409, f"a different tree of the same size {cp.size}: a fork")
            elif latest is None:
                if request.proof:
                    return _text(400, "a proof from the empty tree is empty")
            else:
                try:
                    verify_consistency(latest.size, cp.size, latest.root, cp.root, request.proof)
                except ProofError as e:
                    return _text(422, f"the checkpoint does not extend the one of size {latest.size} this witness "
                                      f"cosigned: {e}")
            now = int(self._clock())
            if cp.time > now + self._max_skew:
                return _text(422, f"the checkpoint is dated {cp.time}, in this witness's future (now {now})")
            if latest is not None and cp.time < latest.time:
                return _text(422, f"the checkpoint is dated {cp.time}, before the one this witness cosigned "
                                  f"({latest.time}): backdated")
            new = Latest(cp.size, cp.root, cp.time)
            if new != latest:
                self._save({**self._latest, cp.origin: new})  # durable before the cosignature leaves
                self._latest[cp.origin] = new
            line = cosign(cp, self.name, self._signer, now)
        return Answer(200, "text/plain; charset=utf-8", line.line().encode("utf-8"))

    # -- state -----------------------------------------------------------------------------------------
    def _take_lock(self) -> None:
        lock_path = self._path.with_name(self._path.name + ".lock")
        try:
            self._lockfile = open(lock_path, "ab")  # noqa: SIM115 - held for the witness's lifetime
            fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WitnessStateError(f"{self._path} is in use by another witness process") from None
        except OSError as e:
            raise WitnessStateError(f"cannot lock {lock_path}: {e.strerror or e}") from e

    def _load(self) -> dict[str, Latest]:
        try:
            data = self._path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise WitnessStateError(f"cannot read {self._path}: {e.strerror or e}") from e
        try:
            doc = loads_strict(data)
            if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT or not isinstance(doc.get("logs"), dict):
                raise ValueError(f"not a {STATE_FORMAT} document")
            latest = {}
            for origin, item in doc["logs"].items():
                root = bytes.fromhex(item["root"])
                if len(root) != DIGEST_SIZE or not all(isinstance(item[k], int) for k in ("size", "time")):
                    raise ValueError(f"log {origin!r:.80}: bad size, root or time")
                latest[str(origin)] = Latest(item["size"], root, item["time"])
            return latest
        except (JsonError, ValueError, KeyError, TypeError) as e:
            raise WitnessStateError(f"{self._path} is not a witness state file: {e}") from e

    def _save(self, latest: Mapping[str, Latest]) -> None:
        doc: dict[str, Any] = {"format": STATE_FORMAT, "logs": {
            o: {"size": v.size, "root": v.root.hex(), "time": v.time} for o, v in sorted(latest.items())}}
        atomic_write(self._path, json.dumps(doc, indent=1, sort_keys=True).encode("utf-8") + b"\n", mode=0o600)


# ------------------------------------------------------------------------------------------------ HTTP
class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10  # seconds a slow client may take per read
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        if self.path != ADD_CHECKPOINT_PATH:
            self._answer(_text(404, f"no such endpoint; POST {ADD_CHECKPOINT_PATH}"))
            return
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._answer(_text(411, "a Content-Length is required"))
            return
        if int(length) > MAX_REQUEST_BYTES:
            self._answer(_text(413, f"a request is at most {MAX_REQUEST_BYTES} bytes"))
            return
        body = self.rfile.read(int(length))
        self._answer(self.server.witness.add_checkpoint(body))

    def do_GET(self) -> None:
        self._answer(_text(405, f"POST {ADD_CHECKPOINT_PATH}"))

    def _answer(self, answer: Answer) -> None:
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], witness: Witness, verbose: bool) -> None:
        super().__init__(address, _Handler)
        self.witness = witness
        self.verbose = verbose


@contextlib.contextmanager
def serving(witness: Witness, host: str = "127.0.0.1", port: int = 0, *,
            verbose: bool = False) -> Iterator[str]:
    """Serve ``witness`` in a thread for the duration of the block; yields its base URL."""
    server = _Server((host, port), witness, verbose)
    thread = threading.Thread(target=server.serve_forever, name="witness", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def serve_forever(witness: Witness, host: str, port: int, *, on_listening: Callable[[int], None],
                  verbose: bool = False) -> None:
    """Serve ``witness`` until interrupted; ``on_listening`` gets the bound port first."""
    server = _Server((host, port), witness, verbose)
    try:
        on_listening(int(server.server_address[1]))
        server.serve_forever()
    finally:
        server.server_close()
