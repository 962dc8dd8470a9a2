"""The verifier's own supply chain: the SHA-256 of every data file it ships, pinned in code.

The measured nulls decide verdicts and the encoder weights draw the pictures, so a verifier whose data files
were swapped would sign wrong receipts with a valid key. At start-up ``check_data_files`` hashes each pinned
file that exists (and the ones the configuration uses must exist); any mismatch refuses to start, naming the
file and both digests. Files regenerated on purpose (``benchmarks.lineage`` refits the nulls,
``benchmarks/train_encoder.py`` retrains the encoder) need their new digest here, in the same commit.

Probe sets need no file pin: a probe set's id is the SHA-256 of its canonical encoding, recomputed from its
tokens wherever it is parsed, and the ones the verifier offers come from manifests in its signed log.
``ServerConfig.probe_set_pins`` can still restrict the offer to a fixed list of ids (see ``check_probe_sets``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from verifier.errors import ConfigError

DATA_DIR = Path(__file__).resolve().parent / "data"
PINNED: dict[str, str] = {
    "null-zoo-v1.json": "9c980bb9ed8f65d823dfe9b3156532cb2f0204fd0a044bdc1dcd1b0b0a3b8c91",
    "null-zoo-v2.json": "14cb8168563f4d3ac6cfb5d66960d60e2a4100aed59ca97ea7a5335b3ff1cce0",
    # benchmarks/fit_null_floor.py (issue 18): the v2 spread plus a floor fitted on real pretraining runs; the default
    "null-zoo-real-v3.json": "131ef677d42413554d5a5f61fa2595e6a99755c9f76964ca17f0f9935bd8f9cd",
    "null-zoo-huref-v1.json": "11524f4ec73048b5fce4ed9f742445cecdb3a3f02ca42b6cfe6c8e07d17079df",
    # benchmarks/fit_sketch_null.py (issue 16): the null of sketched submissions, k = 256
    "null-zoo-sketch256-v1.json": "9fda1b0c36144e191fe731fe9fd3bb9d29bf7573dd1a8e361f3cda911a765239",
    "encoder-cnn-v1.safetensors": "718f44c9efc190b6e9186813a92c3a8f0564e12de0ca3d5c06a60d39b438c7fe",
}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_data_files(required: Iterable[str] = (), data_dir: Path | None = None) -> dict[str, str]:
    """Hash every pinned file present in ``data_dir`` (default: the installed ``verifier/data``); each of
    ``required`` must be there. Returns name -> digest; a mismatch or an unpinned required file is
    ``ConfigError``."""
    root = data_dir or DATA_DIR
    seen: dict[str, str] = {}
    for name in sorted(set(PINNED) | set(required)):
        path = root / name
        if name not in PINNED:
            raise ConfigError(f"{path} has no pinned digest in verifier/_pins.py: refusing to load it")
        if not path.is_file():
            if name in required:
                raise ConfigError(f"{path} is missing (the verifier is not installed completely)")
            continue
        digest = file_sha256(path)
        if digest != PINNED[name]:
            raise ConfigError(f"{path} does not match its pinned digest (sha256 {digest}, pinned {PINNED[name]}): "
                              "refusing to start with modified data files; reinstall the verifier")
        seen[name] = digest
    return seen


def check_file(path: Path | str, expected_sha256: str) -> str:
    """An operator's own data file (``--null FILE --null-sha256 HEX``) against the digest they pinned."""
    digest = file_sha256(Path(path))
    if digest != expected_sha256.lower():
        raise ConfigError(f"{path} does not match the pinned digest (sha256 {digest}, pinned {expected_sha256})")
    return digest


def check_probe_sets(offered: Iterable[str], pins: Iterable[str] | None) -> None:
    """Every probe set id the verifier would offer is among ``pins`` (no pins: no restriction)."""
    if pins is None:
        return
    allowed = set(pins)
    extra = sorted(set(offered) - allowed)
    if extra:
        raise ConfigError(f"the registry offers probe sets that are not pinned: {', '.join(extra)}")
