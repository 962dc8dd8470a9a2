"""The main job (``make demo``): build the lineage zoo, launder a base model with a chain of function-preserving
attacks, and show that pawprint's invariant terms still match while the raw parameters (and the published
HuRef form) do not; a derived model matches its base and an independent one does not.

Then the full two-party flow over gRPC with mutual TLS: a vendor registers the zoo's bases, a verifier serves,
an owner submits a laundered copy, real derivatives and an independent model, and keeps the signed receipts.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from owner import build_probe_set, compute_invariants, load_vocabulary
from owner._model import open_model
from verifier import compare
from zoo.attack_eval import raw_parameter_cosine
from zoo.attacks import attack
from zoo.build import build_zoo
from zoo.function import same_function
from zoo.progress import Progress

LAUNDER_CHAIN: tuple[str, ...] = (
    "fold-rotate", "ffn-permute", "ffn-scale", "head-permute", "qk-linear", "vo-linear", "residual-scale",
    "vocab-permute",
)


def _launder(src: Path, dst: Path, seed: int = 11) -> float:
    """Apply every attack of ``LAUNDER_CHAIN`` in turn; return the largest function change of any step."""
    cur, worst = src, 0.0
    tmp = dst.parent / f".{dst.name}-steps"
    shutil.rmtree(tmp, ignore_errors=True)
    for i, kind in enumerate(LAUNDER_CHAIN):
        nxt = tmp / f"{i}-{kind}"
        res = attack(cur, nxt, kind, seed=seed + i)
        change = same_function(cur, nxt, res, seed)
        worst = max(worst, change)
        print(f"  launder step {i + 1}/{len(LAUNDER_CHAIN)}: {kind:15s} relative output change {change:.1e}",
              flush=True)
        cur = nxt
    shutil.rmtree(dst, ignore_errors=True)
    shutil.move(str(cur), dst)
    shutil.rmtree(tmp, ignore_errors=True)
    return worst


def run_demo(workdir: Path, quick: bool = False, zoo_dir: Path | None = None,
             progress: Progress | None = None) -> int:
    """The main job; ``zoo_dir`` reuses a zoo built elsewhere (it must have been built with the same ``quick``).
    ``progress`` reports the zoo's build, model by model (``build_zoo``); the CLI passes its reporter."""
    t0 = time.time()
    workdir.mkdir(parents=True, exist_ok=True)
    zoo_dir = zoo_dir or workdir / ("zoo-quick" if quick else "zoo")
    print(f"[1/4] lineage zoo in {zoo_dir} (built once, then reused)", flush=True)
    lineage = json.loads(build_zoo(zoo_dir, quick=quick, progress=progress).read_text())
    models = {m["name"]: m for m in lineage["models"]}
    bases = [m["name"] for m in lineage["models"] if m["family"] == "llama" and m["kind"] == "base"]
    base, independent = bases[0], bases[1]
    derived = [m["name"] for m in lineage["models"] if m["parent"] == base and m["kind"] in ("sft", "cpt-heavy")]

    laundered = workdir / f"{base}-laundered"
    print(f"[2/4] laundering {base} with {len(LAUNDER_CHAIN)} function-preserving transforms", flush=True)
    worst = _launder(zoo_dir / base, laundered)
    print(f"  every step keeps the model's function (largest relative output change {worst:.1e})")

    print(f"[3/4] comparing against the base {base} (probe set built from its vocabulary)", flush=True)
    probes = build_probe_set(load_vocabulary(open_model(zoo_dir / base).root))
    inv_base = {m: compute_invariants(zoo_dir / base, probes=probes, method=m) for m in ("pawprint", "huref-2024")}
    suspects = [(laundered.name, laundered, "laundered copy of the base")]
    suspects += [(n, zoo_dir / n, f"{models[n]['kind']} of the base") for n in derived]
    suspects += [(independent, zoo_dir / independent, "independent: same data, other seed")]
    print()
    print(f"{'suspect':28s} {'truth':36s} {'raw cos':>8s} {'pawprint ICS':>13s} {'min term':>9s} {'huref ICS':>10s}")
    for name, path, truth in suspects:
        raw = raw_parameter_cosine(zoo_dir / base, path)
        p = compare(inv_base["pawprint"], compute_invariants(path, probes=probes, method="pawprint"))
        h = compare(inv_base["huref-2024"], compute_invariants(path, probes=probes, method="huref-2024"))
        print(f"{name:28s} {truth:36s} {raw:8.3f} {p.ics:13.4f} {min(t.cosine for t in p.terms):9.4f} {h.ics:10.4f}")
    print()
    print("raw cos: cosine of the weight matrices shared by name and shape; ICS: mean cosine of the six invariant")
    print("terms (last 2 layers x 3); min term: the smallest of the six; huref ICS: the published form (norms not")
    print("folded, FFN term from Wgate^T * Wup^T), which a rotation of the residual stream defeats.")
    _two_party_flow(workdir, zoo_dir, lineage["models"], laundered)
    print(f"done in {time.time() - t0:.0f} s; models, keys, registry and receipts under {workdir}")
    return 0


def _cli(*args: str, quiet: bool = False, expect: int = 0) -> None:
    """``pawprint ARGS`` as its own process, as a user runs it; its output is passed on (stdout only without
    ``quiet``) and an exit status other than ``expect`` raises. (The CLI runs the demo: the demo never imports
    the CLI.)"""
    r = subprocess.run([sys.executable, "-m", "pawprint", *args], capture_output=True, text=True, check=False)
    if not quiet:
        print(r.stdout, end="", flush=True)
    print(r.stderr, end="", file=sys.stderr, flush=True)
    if r.returncode != expect:
        raise RuntimeError(f"pawprint {' '.join(args)} exited with {r.returncode}, not {expect}")


def _start_witnesses(flow: Path, keys: Path, trust: Path, data: Path,
                     started: list[subprocess.Popen[str]]) -> list[str]:
    """Two witnesses (``pawprint witness serve``), each with its own key, trusted in ``trust`` under its name and
    configured with the log's C2SP verifier key; returns their URLs (the processes are appended to ``started``)."""
    from verifier import Registry

    registry = Registry(data, create=False)
    try:
        log_vkey = registry.log.verifier_key()  # what `registry checkpoint` prints, published by the operator
    finally:
        registry.close()
    assert log_vkey is not None
    urls = []
    for name in ("witness-a.example", "witness-b.example"):
        _cli("keys", "generate", "-o", str(keys), "--name", name, "--role", "witness", quiet=True)
        _cli("witness", "key", "--key", str(keys / f"{name}.key"), "--name", name, "-o",
             str(keys / f"{name}.cosign.pub"), quiet=True)
        _cli("trust", "add", str(trust), str(keys / f"{name}.cosign.pub"), "--role", "witness", "--name", name,
             quiet=True)
        process = subprocess.Popen(
            [sys.executable, "-m", "pawprint", "witness", "serve", "--key", str(keys / f"{name}.key"), "--name", name,
             "--state", str(flow / f"{name}.state"), "--log", log_vkey, "--json"], stdout=subprocess.PIPE, text=True)
        started.append(process)
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the witness {name} did not start")
        urls.append(json.loads(line)["url"])
    print(f"  two witnesses serve on {', '.join(urls)} (C2SP tlog-witness), configured with the log's verifier key "
          f"{log_vkey}", flush=True)
    return urls


def _tuf_online_keys(keys: Path) -> list[str]:
    """The TUF repository's online keys, as ``trust-repo`` options."""
    return [a for role in ("targets", "snapshot", "timestamp")
            for a in (f"--{role}-key", str(keys / f"tuf-{role}.key"))]


def _start_trust_repo(flow: Path, keys: Path, trust: Path, started: list[subprocess.Popen[str]]) -> str:
    """A TUF repository publishing ``trust`` (root 2 of 3 keys, the third kept offline; one key each for targets,
    snapshot and timestamp), served over HTTP; returns its URL (the process is appended to ``started``)."""
    for n in (1, 2, 3):
        _cli("keys", "generate", "-o", str(keys), "--name", f"tuf-root-{n}", "--role", "tuf-root", quiet=True)
    for role in ("targets", "snapshot", "timestamp"):
        _cli("keys", "generate", "-o", str(keys), "--name", f"tuf-{role}", "--role", f"tuf-{role}", quiet=True)
    _cli("trust-repo", "init", str(flow / "tuf"), "--store", str(trust), "--root-key", str(keys / "tuf-root-1.key"),
         "--root-key", str(keys / "tuf-root-2.key"), "--root-pub", str(keys / "tuf-root-3.pub"), "--root-threshold",
         "2", *_tuf_online_keys(keys), quiet=True)
    process = subprocess.Popen([sys.executable, "-m", "pawprint", "trust-repo", "serve", str(flow / "tuf"), "--json"],
                               stdout=subprocess.PIPE, text=True)
    started.append(process)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise RuntimeError("the TUF repository did not start")
    url = str(json.loads(line)["url"])
    print(f"  the trust store (vendor, owner, log, verifier and witness keys) is published as TUF metadata at {url} "
          "(root: 2 of 3 keys); readers fetch it with `keys refresh`", flush=True)
    return url


def _dispute(flow: Path, zoo_dir: Path, keys: Path, tls: list[str], address: str) -> tuple[Path, Path]:
    """A thief holds llama-sft (derived from the registered llama-base-s0) and submits a decoy, llama-base-s1,
    under the stolen model's name: it gets a valid ``owner-attested`` receipt saying ``independent``. An auditor
    given the weights the thief actually holds (escrow, a court order) recomputes and finds the receipt is not
    theirs. (A thief who also hands the auditor the decoy's weights is caught by ``audit endpoint`` against what
    it serves; docs/threat-model.md.) Returns the receipt and the auditor's signed finding, for the report."""
    print("\n  the dispute: a thief holds llama-sft (derived from llama-base-s0) and submits a decoy, llama-base-s1,")
    print("  under the name llama-sft", flush=True)
    out = flow / "dispute"
    _cli("owner", "submit", str(zoo_dir / "llama-base-s1"), "--verifier", address, "-k", str(keys / "owner.key"),
         "--verifier-pub", str(keys / "verifier.pub"), *tls, "-o", str(out), "--name", "llama-sft")
    receipt = next(out.glob("*.pawprint-receipt"))
    submission = next(out.glob("*.pawprint-submission"))
    print("  the receipt is valid, and says what stands behind it: owner-attested, the commitment is the owner's "
          "claim", flush=True)
    print("\n  an auditor holding the thief's actual weights (llama-sft) recomputes the receipt:", flush=True)
    # the auditor's own signing key; whoever reads its findings trusts it as an auditor
    _cli("keys", "generate", "-o", str(keys), "--name", "auditor", "--role", "auditor", quiet=True)
    _cli("trust", "add", str(flow / "trust.json"), str(keys / "auditor.pub"), "--role", "auditor", "--name",
         "demo auditor", quiet=True)
    finding = flow / "audit-finding.pawprint-finding"
    _cli("audit", "recompute", str(receipt), str(zoo_dir / "llama-sft"), "--verifier-pub", str(keys / "verifier.pub"),
         "--submission", str(submission), "--key", str(keys / "auditor.key"), "-o", str(finding), expect=1)
    print(f"  the signed finding (checkable offline with pawprint audit verify-finding): {finding}", flush=True)
    _cli("audit", "verify-finding", str(finding), "--auditor-pub", str(keys / "auditor.pub"),
         "--verifier-pub", str(keys / "verifier.pub"), quiet=True)
    return receipt, finding


def _two_party_flow(workdir: Path, zoo_dir: Path, models: list[dict[str, Any]], laundered: Path) -> None:
    """Vendor registers bases, a verifier serves over mutual TLS, an owner submits suspects: the real CLI."""
    flow = workdir / "flow"
    shutil.rmtree(flow, ignore_errors=True)
    keys, pki, data, bundles, receipts = (flow / n for n in ("keys", "pki", "verifier-data", "bundles", "receipts"))
    print("\n[4/4] two-party protocol: fresh keys and TLS certificates, a vendor registers the bases, a verifier")
    print("      serves on loopback with mutual TLS, an owner submits suspects and keeps signed receipts", flush=True)
    for name in ("vendor", "owner", "verifier"):
        _cli("keys", "generate", "-o", str(keys), "--name", name, "--role", name)
    trust = flow / "trust.json"
    _cli("trust", "add", str(trust), str(keys / "vendor.pub"), "--role", "vendor", "--name", "zoo vendor")
    _cli("trust", "add", str(trust), str(keys / "owner.pub"), "--role", "owner", "--name", "demo owner")
    _cli("verifier", "test-certs", "-o", str(pki))
    bundles.mkdir(parents=True)
    bases = [m["name"] for m in models if m["kind"] == "base" and m["name"].endswith("-s0")]
    background: list[subprocess.Popen[str]] = []  # the witnesses and the TUF server, stopped with the verifier
    witness_urls: list[str] = []
    # Readers (owners, auditors, the report) get their trust store through TUF (reader-trust.json), and every
    # reader of the log below requires both witnesses' cosignatures on its checkpoint.
    reader_trust = flow / "reader-trust.json"
    witnessed = ["--witnesses", "2", "--witness-trust", str(reader_trust)]
    tuf_url = ""
    try:
        for base in bases:
            bundle = bundles / f"{base}.bundle"
            _cli("owner", "fingerprint", str(zoo_dir / base), "-k", str(keys / "vendor.key"), "-o", str(bundle), "-q",
                 "--layers", "all")
            _cli("registry", "add", str(bundle), "--data", str(data), "--name", base, "--trust", str(trust),
                 *(a for url in witness_urls for a in ("--witness", url)))
            if base == bases[0]:
                # two independent witnesses, configured with the log's published C2SP verifier key, cosign its
                # checkpoints from now on (each only if it extends the last one it cosigned)
                witness_urls = _start_witnesses(flow, keys, trust, data, background)
                _cli("registry", "witness", "--data", str(data), "--trust", str(trust),
                     *(a for url in witness_urls for a in ("--witness", url)))
                # the log's and the verifier's keys join the trust store, which reaches readers through TUF
                _cli("trust", "add", str(trust), str(data / "log.pub"), "--role", "registry", "--name", "registry log",
                     quiet=True)
                _cli("trust", "add", str(trust), str(keys / "verifier.pub"), "--role", "verifier", "--name",
                     "demo verifier", quiet=True)
                tuf_url = _start_trust_repo(flow, keys, trust, background)
                root = flow / "tuf" / "metadata" / "1.root.json"  # the first root, trusted out of band
                _cli("keys", "refresh", "--tuf-url", tuf_url, "--tuf-root", str(root), "--store", str(reader_trust))
                # an auditor keeps the log's signed, witnessed state after the first registration
                saved = flow / "auditor-checkpoint.note"
                _cli("registry", "checkpoint", "-o", str(saved), "--data", str(data), *witnessed)
                print(f"  an auditor saved the registry's signed checkpoint: {saved}", flush=True)
        server = subprocess.Popen(
            [sys.executable, "-m", "pawprint", "verifier", "serve", "--data", str(data), "--listen", "127.0.0.1:0",
             "--key", str(keys / "verifier.key"), "--trust", str(trust), "--tls-cert", str(pki / "server.pem"),
             "--tls-key", str(pki / "server.key"), "--client-ca", str(pki / "ca.pem"), "--log-level", "WARNING",
             "--layers", "all"],
            stdout=subprocess.PIPE, text=True,
        )
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            if not line.startswith("listening on "):
                raise RuntimeError(f"the verifier did not start: {line!r}")
            address = line.split()[-1]
            print(f"  verifier {line.strip()} (mutual TLS); registered bases: {', '.join(bases)}", flush=True)
            by_name = {m["name"]: m for m in models}
            suspects = [(laundered, "laundered copy of llama-base-s0")]
            suspects += [(zoo_dir / n, f"{by_name[n]['kind']} of {by_name[n]['parent']}")
                         for n in ("llama-sft", "llama-pruned", "llama-cpt-heavy")]
            suspects += [(zoo_dir / "llama-base-s1", "independent (same data, other seed; not registered)")]
            for path, truth in suspects:
                print(f"\n  owner submits {path.name} (truth: {truth})", flush=True)
                out = receipts / path.name
                _cli("owner", "submit", str(path), "--verifier", address, "-k", str(keys / "owner.key"),
                     "--verifier-pub", str(keys / "verifier.pub"), "--ca", str(pki / "ca.pem"),
                     "--cert", str(pki / "client.pem"), "--key", str(pki / "client.key"), "-o", str(out), "-q",
                     "--name", path.name)  # what the owner calls its model: signed, shown as the owner's claim
                for receipt in sorted(out.glob("*.pawprint-receipt")):
                    _cli("receipt", "verify", str(receipt), "--verifier-pub", str(keys / "verifier.pub"), quiet=True)
                    # and each matched base's inclusion in the registry log at the receipt's checkpoint
                    _cli("receipt", "verify", str(receipt), "--trust", str(reader_trust), "--log-trust",
                         str(reader_trust), "--registry", address, "--ca", str(pki / "ca.pem"), "--cert",
                         str(pki / "client.pem"), "--key", str(pki / "client.key"), *witnessed, quiet=True)
                    print(f"  receipt verified offline (signature) and against the registry log (inclusion, both "
                          f"witnesses' cosignatures): {receipt}")
            tls = ["--ca", str(pki / "ca.pem"), "--cert", str(pki / "client.pem"), "--key", str(pki / "client.key")]
            disputed, finding = _dispute(flow, zoo_dir, keys, tls, address)
            # the trust store's new version (with the auditor's key) is published and reaches readers through TUF
            _cli("trust-repo", "publish", str(flow / "tuf"), "--store", str(trust), *_tuf_online_keys(keys), quiet=True)
            _cli("keys", "refresh", "--tuf-url", tuf_url, "--store", str(reader_trust))
            all_receipts = [*sorted(str(r) for r in receipts.glob("*/*.pawprint-receipt")), str(disputed)]
            report = flow / "report.html"
            # the auditor's finding is shown in the headline of the thief's receipt; its key is checked against the
            # trust store, where it is trusted as an auditor
            _cli("report", *all_receipts, "-o", str(report), "--verifier-pub", str(keys / "verifier.pub"),
                 "--registry", address, "--ca", str(pki / "ca.pem"), "--cert", str(pki / "client.pem"),
                 "--key", str(pki / "client.key"), "--log-pub", str(data / "log.pub"),
                 "--finding", str(finding), "--trust", str(reader_trust), *witnessed,
                 "--title", "pawprint demo: suspects against the zoo's registered bases", quiet=True)
            print(f"\n  dispute report (one HTML file, dogs inline, for a non-expert): {report}")
            print("  it shows the auditor's finding in the headline of the thief's receipt, with what each signature "
                  "covers (verifier: the receipt; owner: the submission; auditor: the finding)")
            print("  dogs: each receipt's folder has receipt-*.png (the suspect) and, where the receipt lists a match "
                  "(an independent one lists none), receipt-*-sheet.png (suspect and best match); redraw any with: "
                  "pawprint render RECEIPT -o dogs.png")
            print("\n  the auditor checks the log against the checkpoint saved after the first registration:",
                  flush=True)
            _cli("registry", "audit", "--from", str(saved), "--registry", address, "--ca", str(pki / "ca.pem"),
                 "--cert", str(pki / "client.pem"), "--key", str(pki / "client.key"), "--log-trust", str(reader_trust),
                 *witnessed)
        finally:
            server.terminate()
            server.wait(timeout=30)
    finally:
        for process in background:
            process.terminate()
            process.wait(timeout=30)
    print(f"\n  receipts are under {receipts}; check any of them offline with")
    print(f"  pawprint receipt verify RECEIPT --verifier-pub {keys / 'verifier.pub'}")
