"""Owners name their model (``--name``, signed, shown as the owner's claim) and name it the way they already do
(a Hugging Face repo id in the local cache, at ``--revision``), from the command line."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pawprint.cli import main
from tests.verifier.fixtures import serving_owner


def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def owner_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    code, out, err = run(capsys, "keys", "generate", "-o", tmp_path / "k", "--name", "o", "--role", "owner", "--json")
    assert code == 0, err
    doc: dict[str, Any] = json.loads(out)
    return doc


@pytest.fixture()
def verifier(tmp_path: Path, owner_key: dict[str, Any]) -> Iterator[tuple[str, Path]]:
    with serving_owner(tmp_path / "data", owner_key["private_key"]) as served:
        yield served


def test_a_named_bundle_says_so_and_bundle_verify_shows_it(
    tiny_model: Callable[..., Path], owner_key: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, bundle = tiny_model("llama"), tmp_path / "named.bundle"
    code, out, err = run(capsys, "owner", "fingerprint", model, "-k", owner_key["private_key"], "-o", bundle,
                         "--name", "Acme Tiny Llama 7B-chat", "--json")
    assert code == 0, err
    assert json.loads(out)["display_name"] == "Acme Tiny Llama 7B-chat"
    trust = tmp_path / "trust.json"
    assert run(capsys, "trust", "add", trust, owner_key["public_key"], "--role", "owner")[0] == 0
    code, out, err = run(capsys, "bundle", "verify", bundle, "--trust", trust, "--json")
    assert code == 0 and json.loads(out)["display_name"] == "Acme Tiny Llama 7B-chat", err
    code, out, _ = run(capsys, "bundle", "verify", bundle, "--trust", trust)
    assert "named 'Acme Tiny Llama 7B-chat' by its owner (not verified)" in out
    # A name that could mislead a reader (a bidi override) is refused before any work: bad input, 2.
    code, _, err = run(capsys, "owner", "fingerprint", model, "-k", owner_key["private_key"], "-o",
                       tmp_path / "bad.bundle", "--name", "acme\u202eevil")
    assert code == 2 and "pawprint: error:" in err and not (tmp_path / "bad.bundle").exists()


def test_a_named_submission_gets_a_receipt_that_names_the_model(
    tiny_model: Callable[..., Path], owner_key: dict[str, Any], verifier: tuple[str, Path], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    address, pub = verifier
    args = ("owner", "submit", tiny_model("llama"), "--verifier", address, "-k", owner_key["private_key"],
            "--verifier-pub", pub, "--insecure-loopback", "--name", "acme/tiny-llama", "-q")
    code, out, err = run(capsys, *args, "-o", tmp_path / "a", "--json")
    assert code == 0, err
    assert json.loads(out)["model_name"] == "acme/tiny-llama"
    code, out, err = run(capsys, *args, "-o", tmp_path / "b")
    assert code == 0, err
    assert "model      'acme/tiny-llama'  (named by the owner, not verified)" in out


def test_a_repo_id_in_the_local_cache_at_a_revision(
    tiny_model: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "hub"
    repo = cache / "models--acme--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("a" * 40)
    (repo / "refs" / "gqa").write_text("b" * 40)
    shutil.copytree(tiny_model("llama"), repo / "snapshots" / ("a" * 40))
    shutil.copytree(tiny_model("gpt2"), repo / "snapshots" / ("b" * 40))
    code, out, err = run(capsys, "owner", "inspect", "acme/tiny", "--cache-dir", cache, "--json")
    assert code == 0, err
    assert json.loads(out)["path"].endswith("a" * 40) and json.loads(out)["architecture"]["family"] == "llama"
    code, out, err = run(capsys, "owner", "inspect", "acme/tiny", "--cache-dir", cache, "--revision", "gqa", "--json")
    assert code == 0, err
    assert json.loads(out)["path"].endswith("b" * 40) and json.loads(out)["architecture"]["family"] == "gpt2"
    code, _, err = run(capsys, "owner", "inspect", "acme/absent", "--cache-dir", cache)
    assert code == 2 and "never downloads" in err
