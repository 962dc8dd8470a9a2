"""The owner holds one term at a time: each is spooled to an unlinked temporary file as it is computed, a bundle's
terms are read-only views of that file's memory map (no ``bytes`` copy), they verify against the manifest (the one
the terms held in memory give), and the streamed file is the bytes of ``Bundle.to_bytes``."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import mmap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from owner import compute_invariants, open_model
from owner._agent import InvariantStream, probe_set_for, stream_invariants
from owner._fingerprint import build_bundle, bundle_invariants, fingerprint, load_bundle
from owner.errors import TokenizerError
from protocol import PrivateKey, ProbeSpec, TensorDigest, tensor_name, write_bundle
from protocol.terms import TERMS, term_tensor

TinyModel = Callable[..., Path]
KEY_ID = "ab" * 32


def test_terms_are_views_and_the_streamed_file_is_to_bytes(tiny_model: TinyModel, tmp_path: Path) -> None:
    bundle = build_bundle(tiny_model("llama"), PrivateKey.generate(), now=1_767_225_600)
    assert bundle.terms
    for t in bundle.terms.values():
        assert isinstance(t.data, memoryview) and t.data.readonly and t.dtype == "F32"
    bundle.open()  # names, shapes and SHA-256 match the manifest's table
    out = tmp_path / "m.bundle"
    assert write_bundle(out, bundle) == out.stat().st_size
    assert out.read_bytes() == bundle.to_bytes()
    back = load_bundle(out)
    got, want = bundle_invariants(back), bundle_invariants(bundle)
    assert [g.group for g in got] == [w.group for w in want]
    for g, w in zip(got, want, strict=True):
        assert g.terms.keys() == w.terms.keys()
        assert all((g.terms[k] == w.terms[k]).all() for k in w.terms)


def test_terms_are_spooled_and_the_manifest_is_the_held_terms_one(
    tiny_model: TinyModel, tmp_path: Path
) -> None:
    """Each term is written to an unlinked spool file as it is computed and handed out as a read-only view of its
    memory map; the manifest (table and digests) is the one the terms held in memory give."""
    model = tiny_model("llama")
    spool = tmp_path / "spool"
    spool.mkdir()
    fp = fingerprint(model, KEY_ID, now=1_767_225_600, layers="all", spool_dir=spool)
    assert list(spool.iterdir()) == []  # created unlinked: no name ever points at it
    for t in fp.terms.values():
        assert isinstance(t.data, memoryview) and t.data.readonly and isinstance(t.data.obj, mmap.mmap)
        with pytest.raises(TypeError):
            t.data[:1] = b"\0"
    inv = compute_invariants(model, layers="all")
    want = []
    for layer in inv.layers:
        for name in TERMS:
            held = term_tensor(inv.terms[(layer, name)])
            key = tensor_name(0, layer, name)
            want.append(TensorDigest(key, held.dtype, held.shape, hashlib.sha256(held.data).digest()))
            assert bytes(fp.terms[key].data) == held.data
    assert fp.manifest.tensors == tuple(want)
    assert fp.manifest.groups == (inv.group,)
    assert fp.terms.keys() == {d.name for d in want}


def test_a_probe_set_given_up_midway_leaves_nothing_in_the_spool(
    tiny_model: TinyModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A probe set the model lacks tokens for is skipped, before or after some of its terms were spooled; the
    result is the fingerprint of the usable probe sets alone, byte for byte."""
    model = tiny_model("llama")
    usable = probe_set_for(open_model(model))
    lacking = ProbeSpec(name="absent", version=1, rule=usable.rule, tokens=tuple(f"zq{i}xv" for i in range(32)))
    alone = fingerprint(model, KEY_ID, now=1, probe_sets=[usable])
    skipped = fingerprint(model, KEY_ID, now=1, probe_sets=[lacking, usable])
    assert skipped.manifest == alone.manifest

    def fails_after_two_terms(*args: Any, **kwargs: Any) -> InvariantStream:
        stream = stream_invariants(*args, **kwargs)
        if kwargs["probes"] is not usable:
            return stream

        def terms() -> Iterator[tuple[int, str, np.ndarray]]:
            yield from itertools.islice(stream.terms, 2)
            raise TokenizerError("the tokenizer gave up")

        return dataclasses.replace(stream, terms=terms())

    monkeypatch.setattr("owner._fingerprint.stream_invariants", fails_after_two_terms)
    other = dataclasses.replace(usable, name="other")
    got = fingerprint(model, KEY_ID, now=1, probe_sets=[usable, other])
    want = fingerprint(model, KEY_ID, now=1, probe_sets=[other])
    assert got.manifest == want.manifest
    assert {n: bytes(t.data) for n, t in got.terms.items()} == {n: bytes(t.data) for n, t in want.terms.items()}
    with pytest.raises(TokenizerError):
        fingerprint(model, KEY_ID, now=1, probe_sets=[usable])
