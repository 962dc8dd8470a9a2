"""The owner's fingerprint of a model: invariant terms, a manifest describing them, and the weight commitment.

``fingerprint`` computes the terms on each probe set (a verifier's challenge names them; offline, the probe
set built from the model's own vocabulary) and describes them in a ``Manifest``: model shape facts, probe
coverage, layers, a table of the term tensors (name, dtype, shape, SHA-256) and the weight commitment, the
RFC 6962 root over every checkpoint tensor's (name, dtype, shape, SHA-256 of its bytes). ``build_bundle``
signs it into an offline ``Bundle``; ``owner._client`` streams the same thing to a verifier.

Checkpoint files are hashed by streaming (safetensors: each tensor's byte range read in 8 MiB blocks straight
from the file), tensors in parallel on a thread pool (``pread`` and ``hashlib`` release the GIL), and per-file
digests are cached under the file's identity (``CommitmentCache``) so an unchanged checkpoint is hashed once.

This module must never put a weight tensor, or any piece of one, into a manifest or bundle: weights
contribute a 32-byte digest to the commitment and nothing else; only the ``n x n`` terms leave. With
``chunk_size`` the commitment is the chunked ``weights-v2`` one (``commit_checkpoint_chunked``: each tensor's
bytes through a chunk Merkle tree, cached per file and chunk size); ``read_tensor_bytes`` serves the one explicit
exception, a possession proof's few opened chunks, which ``owner._client`` adds only when asked
(``possession_chunk``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import mmap
import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from owner._adapters import Method
from owner._agent import (
    stream_invariants,
)
from owner._model import OpenedModel, open_model
from owner._source import SafetensorsEntry, safetensors_layout
from owner.errors import CheckpointError, OwnerError, TokenizerError
from protocol import (
    DTYPE_ITEMSIZE,
    Bundle,
    ChunkedTensorDigest,
    ChunkHasher,
    JsonError,
    Manifest,
    PrivateKey,
    ProbeSpec,
    ProtocolError,
    PublisherSignature,
    Tensor,
    TensorDigest,
    TermGroup,
    WeightCommitment,
    check_display_name,
    chunked_weight_commitment,
    loads_strict,
    read_bundle,
    sorted_chunked,
    sorted_entries,
    tensor_name,
    weight_commitment,
    weight_commitment_id,
)
from protocol.terms import InvariantSet, group_terms, sketch_invariants, term_tensor

AGENT_VERSION = "pawprint-agent/0.1.0"
HASH_BLOCK = 8 << 20
_BUNDLE_HEAD = b"\x85\xa6format"

Progress = Callable[[str, int, int], None]


class FingerprintError(OwnerError):
    """A fingerprint cannot be built: no usable probe set, an unhashable checkpoint, a malformed bundle."""


@dataclass(frozen=True)
class Fingerprint:
    """An unsigned manifest and its term tensors, keyed by the names in the manifest's table."""

    manifest: Manifest
    terms: Mapping[str, Tensor]
    # The v2 (chunked) commitment's entries, in commitment order, when the manifest carries one: what a
    # possession proof opens (``owner._client``). Empty for a v1 commitment.
    chunked: tuple[ChunkedTensorDigest, ...] = ()


# ------------------------------------------------------------------------------------ weight commitment
def hash_checkpoint(
    model: OpenedModel, workers: int | None = None, cache: CommitmentCache | None = None
) -> list[TensorDigest]:
    """(name, dtype, shape, SHA-256 of the bytes) of every tensor of the checkpoint, in commitment order.

    Safetensors tensors are hashed in parallel, each tensor's byte range on a worker thread (largest first), so
    one large file keeps every core busy. Per-file digests are looked up in and stored to ``cache`` (default:
    ``CommitmentCache.default()``) under the file's identity (path, size, mtime, ctime, inode), so an unchanged
    checkpoint is not hashed twice; ONNX models (whose external data files the graph names) are not cached.
    """
    cache = CommitmentCache.default() if cache is None else cache
    files = list(dict.fromkeys(model.source.files()))
    n = max(1, workers or os.cpu_count() or 1)
    if model.format == "onnx":
        per_file = [_hash_onnx(files[0])]  # the graph; its external data files are read through it
    elif model.format == "gguf":  # each tensor's stored (possibly quantised) bytes, under its GGUF name
        from owner._gguf import hash_gguf

        per_file = [hash_gguf(files[0])]
    elif model.format in ("safetensors", "pytorch-bin"):
        before = {f: cache.identity(f) for f in files}
        known = {f: cache.get(f, model.format) for f in files}
        todo = [f for f in files if known[f] is None]
        if not todo:
            fresh: dict[Path, list[TensorDigest]] = {}
        elif model.format == "safetensors":
            fresh = _hash_safetensors_files(todo, n)
        else:
            with ThreadPoolExecutor(max(1, min(n, len(todo) or 1)), thread_name_prefix="pawprint-hash") as pool:
                fresh = dict(zip(todo, pool.map(_hash_torch_bin, todo), strict=True))
        for f, digests in fresh.items():
            cache.put(f, model.format, digests, before[f])
        cache.save()
        per_file = [cached if (cached := known[f]) is not None else fresh[f] for f in files]
    else:
        raise FingerprintError(f"{model.path}: no weight commitment for format {model.format!r}")
    try:
        return sorted_entries(d for digests in per_file for d in digests)
    except ProtocolError as e:
        raise FingerprintError(f"{model.path}: {e}") from e


def commit_checkpoint(
    model: OpenedModel, workers: int | None = None, cache: CommitmentCache | None = None
) -> WeightCommitment:
    """The weight commitment over every tensor of ``model``'s checkpoint."""
    digests = hash_checkpoint(model, workers, cache)
    total = sum(math.prod(d.shape) * DTYPE_ITEMSIZE.get(d.dtype, 1) for d in digests)
    return WeightCommitment(root=weight_commitment(digests), tensors=len(digests), total_bytes=total)


_Source = tuple[Path, str, str, tuple[int, ...], int, Callable[[], Any]]


def _tensor_sources(model: OpenedModel) -> list[_Source]:
    """``(file, name, dtype, shape, nbytes, blocks)`` for every checkpoint tensor, ``blocks()`` iterating over its
    bytes (little-endian, as v1 hashes them) in blocks of at most ``HASH_BLOCK``: one tensor read at a time."""
    files = list(dict.fromkeys(model.source.files()))
    out: list[_Source] = []
    if model.format == "safetensors":
        for f in files:
            base, entries = safetensors_layout(f)
            for e in entries:
                def blocks(f: Path = f, lo: int = base + e.start, hi: int = base + e.end, name: str = e.name) -> Any:
                    try:
                        with open(f, "rb") as fh:
                            fh.seek(lo)
                            pos = lo
                            while pos < hi:
                                data = fh.read(min(HASH_BLOCK, hi - pos))
                                if not data:
                                    raise CheckpointError(f"{f}: file ends inside tensor {name!r}")
                                pos += len(data)
                                yield data
                    except OSError as err:
                        raise CheckpointError(f"{f}: cannot read ({err.strerror or err})") from err
                out.append((f, e.name, e.dtype, e.shape, e.end - e.start, blocks))
    elif model.format == "pytorch-bin":
        import torch

        from owner._source import torch_dtype_name

        for f in files:
            try:
                state = torch.load(str(f), map_location="cpu", weights_only=True, mmap=True)
            except Exception as e:  # torch raises many types for corrupt or unsafe pickles
                raise CheckpointError(f"{f}: not a readable PyTorch weights file ({e})") from e
            for name, t in state.items():
                if isinstance(t, torch.Tensor):
                    raw = t.detach().contiguous().reshape(-1).view(torch.uint8).numpy()

                    def pieces(raw: np.ndarray = raw) -> Any:
                        return (raw[i : i + HASH_BLOCK].data for i in range(0, raw.size, HASH_BLOCK))

                    out.append((f, str(name), torch_dtype_name(t.dtype), tuple(t.shape), int(raw.size), pieces))
    else:
        raise FingerprintError(f"{model.path}: no chunked weight commitment for format {model.format!r}")
    return out


def hash_checkpoint_chunked(model: OpenedModel, chunk_size: int,
                            cache: CommitmentCache | None = None) -> list[ChunkedTensorDigest]:
    """The v2 (chunked) entries of every tensor of the checkpoint, in commitment order: each tensor's bytes
    streamed once through a ``ChunkHasher`` (per-chunk hashing holds the GIL, so one thread does it). Per-file
    chunk roots are cached as the v1 digests are (``CommitmentCache``, default ``CommitmentCache.default()``),
    under the file's identity and the chunk size, so an unchanged checkpoint is chunk-hashed once."""
    cache = CommitmentCache.default() if cache is None else cache
    by_file: dict[Path, list[_Source]] = {}
    for source in _tensor_sources(model):
        by_file.setdefault(source[0], []).append(source)
    tag, kind = f"#{weight_commitment_id(chunk_size)}", f"{model.format}+chunks"
    out = []
    for f, sources in by_file.items():
        before = cache.identity(f)
        cached = {d.name: d for d in cache.get(f, kind, tag=tag) or []}
        fresh: list[TensorDigest] = []
        for _, name, dtype, shape, nbytes, blocks in sources:
            known = cached.get(name)
            if known is not None and known.dtype == dtype and known.shape == tuple(shape):
                root = known.sha256  # the cache keeps the chunk root in a TensorDigest's digest field
            else:
                h = ChunkHasher(chunk_size)
                for block in blocks():
                    h.update(block)
                if h.nbytes != nbytes:
                    raise CheckpointError(f"{model.path}: tensor {name!r} has {h.nbytes} bytes, expected {nbytes}")
                root = h.root()
            try:
                out.append(ChunkedTensorDigest(name, dtype, tuple(shape), nbytes, root))
                fresh.append(TensorDigest(name, dtype, tuple(shape), root))
            except ProtocolError as e:
                raise CheckpointError(f"{model.path}: {e}") from e
        if len(cached) != len(sources):
            cache.put(f, kind, fresh, before, tag=tag)
    cache.save()
    try:
        return sorted_chunked(out)
    except ProtocolError as e:
        raise FingerprintError(f"{model.path}: {e}") from e


def commit_checkpoint_chunked(model: OpenedModel, chunk_size: int, cache: CommitmentCache | None = None) -> tuple[
        WeightCommitment, list[ChunkedTensorDigest]]:
    """The v2 weight commitment of ``model``'s checkpoint and its entries (for possession proofs)."""
    entries = hash_checkpoint_chunked(model, chunk_size, cache)
    commitment = WeightCommitment(root=chunked_weight_commitment(entries), tensors=len(entries),
                                  total_bytes=sum(e.nbytes for e in entries), id=weight_commitment_id(chunk_size))
    return commitment, entries


def read_tensor_bytes(model: OpenedModel, name: str) -> bytes:
    """One checkpoint tensor's bytes, as the commitments hash them (for a possession proof's opened chunk)."""
    for _, n, _, _, _, blocks in _tensor_sources(model):
        if n == name:
            return b"".join(bytes(b) for b in blocks())
    raise CheckpointError(f"{model.path}: no tensor {name!r}")


def _hash_safetensors_files(files: Sequence[Path], workers: int) -> dict[Path, list[TensorDigest]]:
    """Hash every tensor's byte range of ``files`` (never a whole file in memory) on ``workers`` threads."""
    if not files:
        return {}
    layouts = {f: safetensors_layout(f) for f in files}
    jobs = [(f, base, e) for f, (base, entries) in layouts.items() for e in entries]
    jobs.sort(key=lambda j: j[2].start - j[2].end)  # largest first: the pool ends evenly
    fds: dict[Path, int] = {}
    try:
        for f in files:
            try:
                fds[f] = os.open(f, os.O_RDONLY)
            except OSError as e:
                raise CheckpointError(f"{f}: cannot read ({e.strerror or e})") from e
            with contextlib.suppress(OSError):
                os.posix_fadvise(fds[f], 0, 0, os.POSIX_FADV_SEQUENTIAL)
        local = threading.local()

        def one(job: tuple[Path, int, SafetensorsEntry]) -> TensorDigest:
            f, base, e = job
            buf = getattr(local, "buf", None)
            if buf is None:
                buf = local.buf = memoryview(bytearray(HASH_BLOCK))
            h = hashlib.sha256()
            pos, end = base + e.start, base + e.end
            try:
                while pos < end:
                    got = os.preadv(fds[f], [buf[: min(end - pos, HASH_BLOCK)]], pos)
                    if got <= 0:
                        raise CheckpointError(f"{f}: file ends inside tensor {e.name!r}")
                    h.update(buf[:got])
                    pos += got
            except OSError as err:
                raise CheckpointError(f"{f}: cannot read ({err.strerror or err})") from err
            try:
                return TensorDigest(e.name, e.dtype, e.shape, h.digest())
            except ProtocolError as err:
                raise CheckpointError(f"{f}: {err}") from err

        with ThreadPoolExecutor(max(1, min(workers, len(jobs))), thread_name_prefix="pawprint-hash") as pool:
            digests = list(pool.map(one, jobs))
    finally:
        for fd in fds.values():
            os.close(fd)
    out: dict[Path, list[TensorDigest]] = {f: [] for f in files}
    for (f, _, _), d in zip(jobs, digests, strict=True):
        out[f].append(d)
    return out


class CommitmentCache:
    """Per-file tensor digests of checkpoints already hashed, so that a second fingerprint does not rehash.

    An entry is used only while the file's identity is unchanged: its resolved path, size, mtime and ctime (in
    ns), inode and device. Rewriting, truncating, appending to, replacing or ``touch``-ing a file changes one of
    them (restoring the mtime changes the ctime), so a stale entry is never used. A file modified less than
    ``RACY_S`` seconds before it was hashed is not cached, since a second write within the clock's resolution
    could leave its times unchanged. The cache holds digests only (never weights); what it stores cannot change
    the commitment's value, only whether it is recomputed. A cache that cannot be read is treated as empty and
    one that cannot be written is skipped: it is an optimisation, never an error.
    """

    FORMAT = "pawprint-commitment-cache/1"
    RACY_S = 2.0
    MAX_FILES = 1024

    def __init__(self, path: Path | None, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._entries: dict[str, dict[str, Any]] | None = None
        self._dirty: dict[str, dict[str, Any]] = {}
        self.hits = 0
        self.misses = 0

    @classmethod
    def default(cls) -> CommitmentCache:
        """``$PAWPRINT_CACHE_DIR``, else ``$XDG_CACHE_HOME/pawprint``, else ``~/.cache/pawprint``; disabled when
        ``PAWPRINT_COMMITMENT_CACHE=0``."""
        if os.environ.get("PAWPRINT_COMMITMENT_CACHE", "1") == "0":
            return cls(None)
        root = os.environ.get("PAWPRINT_CACHE_DIR")
        if root:
            base = Path(root)
        else:
            xdg = os.environ.get("XDG_CACHE_HOME")
            base = (Path(xdg) if xdg else Path.home() / ".cache") / "pawprint"
        return cls(base / "commitments.json")

    @staticmethod
    def identity(path: Path) -> tuple[str, list[int]] | None:
        """``(resolved path, [size, mtime_ns, ctime_ns, inode, device])``, or ``None`` if it cannot be stat-ed."""
        try:
            resolved = path.resolve()
            st = resolved.stat()
        except OSError:
            return None
        return str(resolved), [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]

    def _load(self) -> dict[str, dict[str, Any]]:
        if self._entries is None:
            self._entries = self._read()
        return self._entries

    def _read(self) -> dict[str, dict[str, Any]]:
        if self.path is None:
            return {}
        try:
            doc = loads_strict(self.path.read_bytes())
        except (OSError, JsonError):  # a cache that cannot be read is rebuilt, never trusted
            return {}
        if not isinstance(doc, dict) or doc.get("format") != self.FORMAT or not isinstance(doc.get("files"), dict):
            return {}
        return {k: v for k, v in doc["files"].items() if isinstance(k, str) and isinstance(v, dict)}

    def get(self, path: Path, kind: str, tag: str = "") -> list[TensorDigest] | None:
        """The cached digests of ``path`` if its identity is unchanged since they were stored. ``tag`` keeps
        another kind of digest of the same file apart (the chunk roots of a v2 commitment)."""
        ident = self.identity(path)
        entry = self._load().get(ident[0] + tag) if ident is not None and self.path is not None else None
        if ident is None or entry is None or entry.get("identity") != ident[1] or entry.get("kind") != kind:
            self.misses += 1
            return None
        try:
            digests = [TensorDigest(str(n), str(dt), tuple(int(x) for x in shape), bytes.fromhex(h))
                       for n, dt, shape, h in entry["digests"]]
        except (KeyError, TypeError, ValueError, ProtocolError):
            self.misses += 1
            return None
        self.hits += 1
        return digests

    def put(self, path: Path, kind: str, digests: Sequence[TensorDigest],
            before: tuple[str, list[int]] | None, tag: str = "") -> None:
        """Remember ``digests`` for ``path``, hashed while its identity was ``before`` (taken before hashing): a
        file that changed meanwhile, or whose identity is unknown, is not cached."""
        ident = self.identity(path)
        if self.path is None or ident is None or ident != before:
            return
        if self._clock() - ident[1][1] / 1e9 < self.RACY_S:
            return  # modified too recently for its times to tell a later write apart
        self._dirty[ident[0] + tag] = {
            "identity": ident[1], "kind": kind, "used": int(self._clock()),
            "digests": [[d.name, d.dtype, list(d.shape), d.sha256.hex()] for d in digests],
        }

    def save(self) -> None:
        """Merge the new entries into the cache file (atomically; the oldest beyond ``MAX_FILES`` dropped)."""
        if self.path is None or not self._dirty:
            return
        files = {**self._read(), **self._dirty}
        if len(files) > self.MAX_FILES:
            keep = sorted(files, key=lambda k: files[k].get("used", 0) if isinstance(files[k].get("used"), int) else 0)
            files = {k: files[k] for k in keep[-self.MAX_FILES :]}
        data = json.dumps({"format": self.FORMAT, "files": files}, separators=(",", ":")).encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".commitments.", dir=self.path.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError:
            return  # a read-only or full cache directory only costs a rehash next time
        self._entries = files
        self._dirty = {}


def _hash_torch_bin(path: Path) -> list[TensorDigest]:
    """Hash each tensor of a PyTorch state dict, memory-mapped (``weights_only``: no code is run)."""
    import torch

    from owner._source import torch_dtype_name

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # torch raises many types for corrupt or unsafe pickles
        raise CheckpointError(f"{path}: not a readable PyTorch weights file ({e})") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, found {type(state).__name__}")
    out = []
    for name, t in state.items():
        if not isinstance(t, torch.Tensor):
            continue
        raw = t.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
        h = hashlib.sha256()
        for i in range(0, raw.size, HASH_BLOCK):
            h.update(raw[i : i + HASH_BLOCK].data)
        out.append(TensorDigest(str(name), torch_dtype_name(t.dtype), tuple(t.shape), h.digest()))
    return out


_NUMPY_TO_ST = {
    "float64": "F64", "float32": "F32", "float16": "F16", "int8": "I8", "uint8": "U8", "int16": "I16",
    "uint16": "U16", "int32": "I32", "uint32": "U32", "int64": "I64", "uint64": "U64", "bool": "BOOL",
}


def _hash_onnx(path: Path) -> list[TensorDigest]:
    """Hash every initializer of an ONNX graph (loaded one at a time through ``onnx.numpy_helper``)."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError and others for corrupt files
        raise CheckpointError(f"{path}: not a readable ONNX model ({e})") from e
    out = []
    for init in model.graph.initializer:
        try:
            arr = np.ascontiguousarray(numpy_helper.to_array(init, base_dir=str(path.parent)))
        except Exception as e:  # missing external data files and unsupported types
            raise CheckpointError(f"{path}: cannot read initializer {init.name!r} ({e})") from e
        dtype = _NUMPY_TO_ST.get(arr.dtype.name, arr.dtype.name.upper())
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).reshape(-1).view(np.uint8)
        digest = hashlib.sha256(data.data).digest()
        out.append(TensorDigest(init.name, dtype, tuple(int(d) for d in arr.shape), digest))
    return out


# ------------------------------------------------------------------------------------------ manifests
def fingerprint(
    model: OpenedModel | Path | str,
    owner_key_id: str,
    *,
    now: int,
    probe_sets: Sequence[ProbeSpec] | None = None,
    layers: str | Sequence[int] | None = None,
    method: Method = "pawprint",
    nonce: bytes | None = None,
    keep_invariants: bool = False,
    workers: int | None = None,
    progress: Progress | None = None,
    display_name: str | None = None,
    spool_dir: str | os.PathLike[str] | None = None,
    publisher_signature: PublisherSignature | None = None,  # a verified publisher signature, stated as given
    chunk_size: int | None = None,  # a chunked (weights-v2) commitment with chunks of this many bytes
) -> Fingerprint:
    """Terms and unsigned manifest of ``model``.

    Without ``probe_sets`` the probe set is built from the model's own vocabulary. With several, a probe set
    of which the model has too few tokens is skipped (nothing could be compared on it); none usable is an
    error. ``now`` (Unix seconds) is passed in so that the result is reproducible. ``display_name`` is the
    owner's name for the model, signed in the manifest and shown in receipts as named by the owner; it is
    checked (``protocol.check_display_name``) before anything is computed, and left out of the manifest when
    ``None``. ``chunk_size`` commits with the chunked (``weights-v2``) commitment instead of v1, and returns its
    entries in ``Fingerprint.chunked`` for a possession proof.
    """
    if display_name is not None:
        try:
            check_display_name(display_name, "the model's display name")
        except ProtocolError as e:
            raise FingerprintError(str(e)) from e
    m = model if isinstance(model, OpenedModel) else open_model(Path(model))
    wanted: list[ProbeSpec | None] = list(probe_sets) if probe_sets else [None]
    groups: list[TermGroup] = []
    model_facts: dict[str, str | int | bool] = {}
    table: list[TensorDigest] = []
    skipped: list[str] = []
    with _TermSpool(spool_dir) as spool:
        for probes in wanted:
            i, mark = len(groups), spool.mark()
            try:
                stream = stream_invariants(m, probes=probes, layers=layers, method=method, progress=progress)
                digests: dict[str, TensorDigest] = {}
                for layer, name, array in stream.terms:
                    key = tensor_name(i, layer, name)
                    digests[key] = spool.add(key, array)
                    del array  # before the next term is computed: one term is held at a time
            except TokenizerError as e:
                if len(wanted) == 1:
                    raise
                spool.rollback(mark)  # a probe set given up after some terms: its terms leave the spool
                skipped.append(f"{probes.name if probes else 'default'}: {e}")
                continue
            if not groups:
                model_facts = {k: v for k, v in stream.model.items() if isinstance(v, str | int)}
            groups.append(stream.group)
            table += [digests[key] for key in stream.group.tensor_names(i)]  # the table's order, as before
        if not groups:
            reasons = "; ".join(skipped)
            raise FingerprintError(f"{m.root}: no probe set of the challenge is usable with this model ({reasons})")
        chunked: list[ChunkedTensorDigest] = []
        if chunk_size is None:
            commitment = commit_checkpoint(m, workers)
        else:
            try:
                commitment, chunked = commit_checkpoint_chunked(m, chunk_size)
            except ProtocolError as e:
                raise FingerprintError(f"{m.root}: {e}") from e
        try:
            manifest = Manifest(
                owner_key_id=owner_key_id, nonce=nonce, created_at=int(now), agent=AGENT_VERSION, model=model_facts,
                groups=tuple(groups), tensors=tuple(table), weight_commitment=commitment,
                keep_invariants=keep_invariants, display_name=display_name,
                publisher_signature=publisher_signature,
            )
            manifest.check_terms()
        except ProtocolError as e:
            raise FingerprintError(f"{m.root}: cannot describe the fingerprint ({e})") from e
        terms = spool.tensors()
    return Fingerprint(manifest, terms, tuple(chunked))


def _term_bytes(array: np.ndarray) -> memoryview:
    """A term's bytes as it travels (little-endian F32), without a copy of the array where there need be none.

    The agent's terms are C-contiguous float32 already, so on a little-endian machine ``ascontiguousarray``
    returns the array itself and this is a byte view of its buffer; any other array is converted once.
    """
    return np.ascontiguousarray(array, dtype="<f4").reshape(-1).view(np.uint8).data


class _TermSpool:
    """A fingerprint's terms, written to an anonymous temporary file as they are computed and handed out at the
    end as read-only memory-mapped views of it, so that the process holds one term at a time (six 4096 x 4096
    float32 terms are 384 MiB whatever the model's size) and the kernel pages the rest in and out as it is read.

    Privacy: the spool holds the terms and nothing else, the same bytes the manifest describes and the bundle or
    submission carries; no weight, nor any piece of one, is ever written to it. It is a local file in ``directory``
    (default: the system's temporary directory), created unlinked (``tempfile.TemporaryFile``), so no name ever
    points at it and nothing of it outlives the process: the kernel frees it when the file is closed and the last
    view of the mapping is released.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self._file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 (closed by close())
        self._slices: dict[str, tuple[int, tuple[int, ...]]] = {}  # name -> (offset, shape)
        self._size = 0

    def __enter__(self) -> _TermSpool:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def add(self, name: str, array: np.ndarray) -> TensorDigest:
        """Append a term's little-endian F32 bytes to the spool; its table entry (with the SHA-256 of the bytes)."""
        data = _term_bytes(array)
        entry = TensorDigest(name, "F32", tuple(int(d) for d in array.shape), hashlib.sha256(data).digest())
        self._file.write(data)  # a buffered file's write takes every byte (or raises)
        self._slices[name] = (self._size, entry.shape)
        self._size += len(data)
        return entry

    def mark(self) -> int:
        """The spool's size now, for ``rollback``."""
        return self._size

    def rollback(self, mark: int) -> None:
        """Drop every term added since ``mark``."""
        self._file.flush()
        self._file.truncate(mark)
        self._file.seek(mark)
        self._slices = {k: v for k, v in self._slices.items() if v[0] < mark}
        self._size = mark

    def tensors(self) -> dict[str, Tensor]:
        """Every term as a ``Tensor`` whose data is a read-only view of its slice of the memory-mapped spool (the
        mapping keeps the unlinked file alive until its last view is released); the spool is closed."""
        self._file.flush()
        whole = memoryview(mmap.mmap(self._file.fileno(), self._size, access=mmap.ACCESS_READ)) if self._size \
            else memoryview(b"")
        self.close()
        out: dict[str, Tensor] = {}
        for name, (offset, shape) in self._slices.items():
            out[name] = Tensor("F32", shape, whole[offset : offset + math.prod(shape) * 4])
        return out

    def close(self) -> None:
        self._file.close()


def sketch_fingerprint(fp: Fingerprint, k: int) -> Fingerprint:
    """``fp`` with every group's terms replaced by their public ``k x k`` sketches (``protocol._sketch``), as a
    verifier asks in its challenge (issue 16): the manifest's groups say ``sketch = k`` and its table lists the
    sketches' digests; the weight commitment and everything else stay. Only the sketches are sent; the terms
    stay on the owner's machine (a bundle keeps full terms)."""
    manifest = fp.manifest
    if any(g.sketch for g in manifest.groups):
        raise FingerprintError("the fingerprint is already sketched")
    groups, tensors, terms = [], [], {}
    for i, inv in enumerate(group_terms(manifest, fp.terms)):
        try:
            sketched = sketch_invariants(inv, k)
        except (ProtocolError, ValueError) as e:
            raise FingerprintError(f"cannot sketch group {i}: {e}") from e
        groups.append(sketched.group)
        for name, key in zip(sketched.group.tensor_names(i), sketched.group.term_keys(), strict=True):
            t = terms[name] = term_tensor(sketched.terms[key])
            tensors.append(TensorDigest(name, t.dtype, t.shape, hashlib.sha256(t.data).digest()))
    out = dataclasses.replace(manifest, groups=tuple(groups), tensors=tuple(tensors))
    out.check_terms()
    return dataclasses.replace(fp, manifest=out, terms=terms)


def build_bundle(
    model: OpenedModel | Path | str,
    key: PrivateKey,
    *,
    now: int,
    layers: str | Sequence[int] | None = None,
    probe_sets: Sequence[ProbeSpec] | None = None,
    method: Method = "pawprint",
    workers: int | None = None,
    progress: Progress | None = None,
    display_name: str | None = None,
    publisher_signature: PublisherSignature | None = None,
) -> Bundle:
    """The signed offline bundle of ``model`` (kind ``bundle``: it answers no challenge), its manifest naming
    the model ``display_name`` if given."""
    fp = fingerprint(
        model, key.key_id, now=now, probe_sets=probe_sets, layers=layers, method=method, workers=workers,
        progress=progress, display_name=display_name, publisher_signature=publisher_signature,
    )
    return Bundle.create(fp.manifest, fp.terms, key)


# ------------------------------------------------------------------------------- back to invariant sets
def bundle_invariants(bundle: Bundle) -> list[InvariantSet]:
    """Check a bundle's signature and terms, and return one ``InvariantSet`` per group (trust is not checked)."""
    try:
        manifest = bundle.open()
    except ProtocolError as e:
        raise FingerprintError(f"bundle does not verify: {e}") from e
    try:
        return group_terms(manifest, bundle.terms)
    except ProtocolError as e:
        raise FingerprintError(f"bundle terms do not match its manifest ({e})") from e


def load_bundle(path: Path | str) -> Bundle:
    """Read a bundle file (``protocol.read_bundle``); errors name the file."""
    try:
        return read_bundle(path)
    except ProtocolError as e:
        raise FingerprintError(str(e)) from e


def is_bundle_file(path: Path | str) -> bool:
    """Whether ``path`` starts like a bundle file (a five-entry msgpack map whose first key is ``format``)."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return False
    return head[:8] == _BUNDLE_HEAD
