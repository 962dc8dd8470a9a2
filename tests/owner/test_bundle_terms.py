"""The owner holds each term once: a bundle's terms are read-only views of the arrays the agent computed (no
``bytes`` copy), they verify against the manifest, and the streamed file is the bytes of ``Bundle.to_bytes``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from owner._fingerprint import build_bundle, bundle_invariants, load_bundle
from protocol import PrivateKey, write_bundle

TinyModel = Callable[..., Path]


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
