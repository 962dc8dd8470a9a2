"""Every challenge names every probe set of the registry (the verifier, not the suspect, chooses what it is
measured on), so the number of probe sets a registry holds is capped: past the cap a base must use a probe set
already registered."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from protocol import Bundle, PrivateKey
from tests.verifier.cli import main as cli
from tests.verifier.fixtures import Keys
from verifier import Registry, RegistryError

pytest_plugins = ["tests.verifier.fixtures"]


def _on_probe_set(base: Bundle, key: PrivateKey, name: str, model: str = "") -> Bundle:
    """The base's terms, signed again under another probe-set name (so another probe-set id), as the bundle of
    another model (another weight commitment)."""
    manifest = base.open()
    groups = tuple(dataclasses.replace(g, probe_set=dataclasses.replace(g.probe_set, name=name))
                   for g in manifest.groups)
    commitment = dataclasses.replace(manifest.weight_commitment, root=hashlib.sha256((name + model).encode()).digest())
    return Bundle.create(dataclasses.replace(manifest, groups=groups, weight_commitment=commitment), base.terms, key)


def test_a_base_may_bring_a_new_probe_set_only_below_the_cap(tmp_path: Path, keys: Keys, base_bundle: Bundle) -> None:
    trust = keys.trust()
    registry = Registry(tmp_path / "data", max_probe_sets=2)
    registry.add_base("first", base_bundle, trust)
    registry.add_base("second", _on_probe_set(base_bundle, keys.vendor, "other-1"), trust)
    assert len(registry.probe_sets()) == 2
    size = registry.size()
    with pytest.raises(RegistryError, match=r"holds 2 probe sets and takes at most 2.*--max-probe-sets"):
        registry.add_base("third", _on_probe_set(base_bundle, keys.vendor, "other-2"), trust)
    assert registry.size() == size and registry.base("third") is None  # nothing written
    # A base on a registered probe set is still welcome.
    registry.add_base("fourth", _on_probe_set(base_bundle, keys.vendor, "other-1", "another model"), trust)
    assert len(registry.probe_sets()) == 2 and registry.size() == size + 1
    registry.close()
    with pytest.raises(ValueError, match="at least 1"):
        Registry(tmp_path / "data", max_probe_sets=0)


def test_the_cap_is_a_command_line_option(tmp_path: Path, keys: Keys, base_bundle: Bundle,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    trust = tmp_path / "trust.json"
    keys.trust().save(trust)
    other = tmp_path / "other.bundle"
    other.write_bytes(_on_probe_set(base_bundle, keys.vendor, "other-1").to_bytes())
    first = tmp_path / "first.bundle"
    first.write_bytes(base_bundle.to_bytes())
    common = ["--data", str(tmp_path / "data"), "--trust", str(trust), "--max-probe-sets", "1"]
    assert cli(["registry", "add", str(first), "--name", "first", *common]) == 0
    capsys.readouterr()
    assert cli(["registry", "add", str(other), "--name", "other", *common]) == 2
    err = capsys.readouterr().err
    # one line, naming the bundle, then the registry's refusal
    assert err.startswith(f"pawprint: error: {other} ") and "\n" not in err.rstrip("\n")
    assert "the registry holds 1 probe sets and takes at most 1" in err
    assert cli(["registry", "add", str(other), "--name", "other", *common[:-1], "2"]) == 0
