"""The dispute report's sample and its look in a real browser: tooling around ``verifier._report``, not part of it.

    python -m benchmarks.report_sample --sample docs/results

writes ``report_sample.html`` (two made-up receipts, signed by fixed, public, worthless keys, with the
synthetic null they were checked against) and ``report_screenshot.png``, taken with headless Chromium
(``$PAWPRINT_CHROMIUM``, else the first Chromium on ``PATH``; ``make browser`` installs Debian's).
``tests/verifier/test_report.py`` uses the same sample receipts and loads the page in the same browser.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np

from protocol import RECEIPT_FORMAT, Match, Picture, PrivateKey, Receipt, atomic_write, parse_score
from verifier._render import RENDERER_ID
from verifier._report import ReportError, _png, write_report

CHROMIUM_ENV = "PAWPRINT_CHROMIUM"
_CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = "install it with `make browser` (on Debian: apt-get install chromium)"


class BrowserMissing(ReportError):
    """No headless Chromium to look at the page with."""


# ------------------------------------------------------------------------------------------------ browser
def find_chromium() -> str:
    """The headless Chromium to look at pages with: ``$PAWPRINT_CHROMIUM``, else the first on ``PATH``."""
    named = os.environ.get(CHROMIUM_ENV)
    if named:
        if shutil.which(named) is None:
            raise BrowserMissing(f"${CHROMIUM_ENV}={named} is not an executable; {INSTALL_HINT}")
        return named
    for name in _CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise BrowserMissing(f"no Chromium found (looked for ${CHROMIUM_ENV}, {', '.join(_CHROMIUM_NAMES)}); "
                         f"{INSTALL_HINT}")


def _chromium(args: Sequence[str], timeout: float) -> str:
    exe = find_chromium()
    # A fresh profile each time: concurrent runs do not share a lock, and nothing persists.
    with tempfile.TemporaryDirectory(prefix="pawprint-chromium-") as profile:
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
               f"--user-data-dir={profile}", *args]
        try:
            done = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as e:
            raise ReportError(f"Chromium did not finish within {timeout:g} s") from e
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        raise ReportError(f"Chromium failed (exit {done.returncode}): {' | '.join(tail)}")
    return done.stdout.decode("utf-8", "replace")


def rendered_state(page: Path, *, timeout: float = 90) -> str:
    """What the page's script recorded after loading in headless Chromium: ``"ok"`` when every picture decoded
    and nothing was blocked or failed, ``"error"`` otherwise (``"missing"``: no record at all)."""
    dom = _chromium(["--dump-dom", page.resolve().as_uri()], timeout)
    m = re.search(r'<body[^>]*\bdata-rendered="([a-z]+)"', dom)
    return m.group(1) if m else "missing"


def screenshot(page: Path, png: Path, *, width: int = 1200, height: int = 2400, timeout: float = 90) -> None:
    """A ``width`` x ``height`` PNG screenshot of ``page`` taken with headless Chromium."""
    png = png.resolve()
    png.unlink(missing_ok=True)
    _chromium([f"--screenshot={png}", f"--window-size={width},{height}", page.resolve().as_uri()], timeout)
    if not png.is_file():
        raise ReportError(f"Chromium wrote no screenshot to {png}")


# ------------------------------------------------------------------------------------------------ sample
SAMPLE_TIME = 1_750_000_000
_SAMPLE_MEANS = {"attn_qk": 0.02, "attn_vo": 0.01, "ffn": 0.01}
_SAMPLE_SDS = {"attn_qk": 0.03, "attn_vo": 0.02, "ffn": 0.02}
_SAMPLE_METHOD = "pawprint-terms/1(sample)"


@dataclass(frozen=True)
class Sample:
    """Made-up receipts for the sample report and the tests, signed by fixed, public, worthless keys."""

    receipts: tuple[Path, ...]
    verifier_pub: Path
    log_pub: Path
    null_file: Path
    verifier_key: PrivateKey


def sample_receipts(directory: Path, *, derived_base: str = "acme/base-7b") -> Sample:
    """Write two sample receipts to ``directory``: ``derived.receipt`` (derived from ``derived_base``, with
    pictures) and ``independent.receipt``, with the keys and the (synthetic) null they were made with."""
    from protocol import Checkpoint, RegistryState, TermScoreRecord, format_score, sign_checkpoint, sign_message
    from verifier._calibration import DEFAULT_THRESHOLDS, fit_null
    from verifier._compare import _calibrated, decide, verdict_of

    directory.mkdir(parents=True, exist_ok=True)
    verifier, log, owner = (PrivateKey.from_seed(bytes([b]) * 32) for b in (0x51, 0x52, 0x53))
    vendors = [PrivateKey.from_seed(bytes([b]) * 32).key_id for b in (0x61, 0x62, 0x63)]
    rng = np.random.default_rng(20250615)
    terms = tuple(_SAMPLE_MEANS)
    null_pairs = [[(t, float(rng.normal(_SAMPLE_MEANS[t], _SAMPLE_SDS[t]))) for _ in range(4) for t in terms]
                  for _ in range(40)]
    null = fit_null(null_pairs, _SAMPLE_METHOD, "rare-ids-v1", "synthetic null for the sample report")
    bases = (derived_base, "globex/lm-3b", "initech/chat-1b")
    root = hashlib.sha256(b"sample registry").digest()
    note = sign_checkpoint(Checkpoint("pawprint/registry/sample", 3, root, SAMPLE_TIME - 86_400), log).text
    base_vectors = [rng.standard_normal(512) for _ in bases]

    def picture(v: np.ndarray) -> Picture:
        raw = (v / np.linalg.norm(v) * math.sqrt(512)).astype("<f4").tobytes()
        return Picture("sample-encoder/1", RENDERER_ID, raw, hashlib.sha256(raw).digest(),
                       hashlib.sha256(_png(raw)).digest())

    def match(i: int, cosines: Sequence[float]) -> Match:
        records = tuple(TermScoreRecord(layer, layer, t, format_score(float(np.clip(c + rng.normal(0, 0.015), -1, 1))))
                        for layer in (20, 21, 22, 23) for t, c in zip(terms, cosines, strict=True))
        m = Match(bases[i], hashlib.sha256(bases[i].encode()).digest(), vendors[i], "0f" * 32,
                  format_score(float(np.mean([float(r.cosine) for r in records]))),
                  min((r.cosine for r in records), key=parse_score), 3987, "inconclusive", records, log_index=i,
                  picture=picture(base_vectors[i]))
        return _calibrated(m, null)

    def receipt(name: str, matches: Sequence[Match], mine: np.ndarray) -> Path:
        decided = decide(matches)
        decided.sort(key=lambda m: (Decimal(m.p_value or 2), -parse_score(m.ics)))
        r = Receipt(
            verifier.key_id, owner.key_id, hashlib.sha256(b"nonce " + name.encode()).digest(),
            hashlib.sha256(b"manifest " + name.encode()).digest(), hashlib.sha256(b"weights " + name.encode()).digest(),
            RegistryState(3, root), len(decided), tuple(decided), verdict_of(decided), DEFAULT_THRESHOLDS.rule,
            (_SAMPLE_METHOD,), SAMPLE_TIME, False, checkpoint=note, null_id=null.null_id, picture=picture(mine))
        path = directory / f"{name}.receipt"
        atomic_write(path, sign_message(r, verifier).to_bytes(RECEIPT_FORMAT))
        return path

    derived = receipt("derived", [match(0, (0.91, 0.78, 0.86)), match(1, (0.01, 0.0, 0.004)),
                                  match(2, (0.12, 0.04, 0.05))],
                      0.9 * base_vectors[0] + math.sqrt(1 - 0.81) * rng.standard_normal(512))
    independent = receipt("independent", [match(0, (0.03, 0.012, 0.01)), match(1, (0.01, 0.0, 0.004)),
                                          match(2, (0.025, 0.011, 0.01))], rng.standard_normal(512))
    verifier.public_key.save(directory / "verifier.pub")
    log.public_key.save(directory / "log.pub")
    atomic_write(directory / "null.json", null.to_json().encode("utf-8"))
    return Sample((derived, independent), directory / "verifier.pub", directory / "log.pub", directory / "null.json",
                  verifier)


def write_sample(out_dir: Path, screenshot_to: Path | None = None) -> tuple[Path, Path]:
    """The sample report (``report_sample.html``) and its screenshot (default ``report_screenshot.png``)."""
    sample = sample_receipts(out_dir / "sample-receipts")
    page = out_dir / "report_sample.html"
    write_report(sample.receipts, page, verifier_pub=sample.verifier_pub, log_pub=sample.log_pub,
                 null_file=sample.null_file, title="pawprint dispute report (sample)")
    png = screenshot_to or out_dir / "report_screenshot.png"
    screenshot(page, png)
    return page, png


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report_sample", description=__doc__.splitlines()[0])
    parser.add_argument("--sample", required=True, metavar="OUT_DIR", type=Path,
                        help="write a sample report (made-up receipts) and its screenshot here")
    parser.add_argument("--screenshot", metavar="PNG", type=Path, default=None,
                        help="where the screenshot goes (default OUT_DIR/report_screenshot.png)")
    args = parser.parse_args(argv)
    try:
        page, png = write_sample(args.sample, args.screenshot)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {page} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

