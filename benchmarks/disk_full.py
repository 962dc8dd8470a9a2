"""A verifier whose disk fills up, on a real filesystem (issue #9, item 2; the test suite simulates ENOSPC in
process, ``tests/verifier/test_access.py::test_a_full_disk_while_writing_a_blob_...``).

    python -m benchmarks.disk_full      (as root: it mounts a small tmpfs, and unmounts it at the end)

``pawprint verifier serve`` (its own process, loopback TLS) runs with its data directory on a tmpfs; a filler file
takes every free byte of it when the disk is to be full, and is deleted to free it. The registry is the load
benchmark's (three tiny LLaMA bases); owners' terms are computed once. Steps, every answer recorded:

1. Space free: a submission and a publish succeed.
2. Disk full: a submission answering a challenge handed out before, a new challenge, a publish, reads (checkpoint,
   list), health.
3. Space freed: the same submission stream and the same publish sent again, then a fresh submission.
4. The server is stopped (SIGTERM) and its data directory audited: every receipt a client got is stored once,
   nothing else is, every publish is its entry, the log audits from the first checkpoint; no temp file is left.
5. A restart with the disk full, then with space again.

Writes ``docs/results/disk_full.json`` and ``.md``. What must hold (the exit status says whether it did): every
refusal on the full disk is RESOURCE_EXHAUSTED saying the storage is full, or the call succeeds; nothing is half
written; reads and health go on; everything succeeds once space is back; the audit passes.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import errno
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.load import (
    VERIFIER,
    Got,
    Ledger,
    OwnerModel,
    Recorder,
    ServerProcess,
    Workspace,
    _code,
    audit_data,
    machine,
    owner_key,
    prepare,
    publish_once,
    serve_argv,
    vendor_key,
)
from owner._client import check_receipt, request_challenge, submission_requests
from protocol import ONLINE_MANIFEST_KIND, Challenge, SignedMessage, sign_message
from protocol._pb import pawprint_pb2_grpc

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "out" / "disk_full"


class Disk:
    """A tmpfs of ``size`` bytes at ``mnt`` and a filler file that takes all of its free space."""

    def __init__(self, mnt: Path, size: int) -> None:
        self.mnt, self.size = mnt, size
        mnt.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], check=True,
                       capture_output=True, text=True)
        self.filler = mnt / "filler"

    def free_bytes(self) -> int:
        st = os.statvfs(self.mnt)
        return st.f_bavail * st.f_frsize

    def fill(self) -> int:
        """Write until ENOSPC, in ever smaller pieces; returns the free bytes left (0 on tmpfs)."""
        with self.filler.open("ab", buffering=0) as f:  # unbuffered: nothing is left to flush at close
            for piece in (1 << 20, 1 << 12, 1):
                block = b"\0" * piece
                while True:
                    try:
                        if f.write(block) == 0:
                            break
                    except OSError as e:
                        if e.errno != errno.ENOSPC:
                            raise
                        break
        return self.free_bytes()

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        subprocess.run(["umount", str(self.mnt)], check=False, capture_output=True)


def _call(fn: Callable[[], Any]) -> tuple[str, str, Any]:
    """(status name, details, result) of one call: OK and its result, or the refusal."""
    try:
        return "OK", "", fn()
    except Exception as e:  # recorded, not hidden: the report lists every answer
        details = e.details() if isinstance(e, grpc.RpcError) and callable(getattr(e, "details", None)) else str(e)
        return _code(e), str(details), None


@dataclasses.dataclass
class Stream:
    """A signed submission answering one challenge, ready to send (again)."""

    challenge: Challenge
    signed: SignedMessage
    model: OwnerModel
    manifest: Any

    def requests(self) -> Any:
        return submission_requests(self.signed, self.manifest, self.model.terms, self.challenge.limits.max_chunk_bytes)


def _stream(channel: grpc.Channel, model: OwnerModel, owner: int) -> Stream:
    key = owner_key(owner)
    stub = pawprint_pb2_grpc.VerifierStub(channel)
    challenge = request_challenge(stub, VERIFIER.public_key, key.key_id, 30)
    manifest = dataclasses.replace(model.manifest, owner_key_id=key.key_id, nonce=challenge.nonce,
                                   created_at=int(time.time()))
    return Stream(challenge, sign_message(manifest, key, ONLINE_MANIFEST_KIND), model, manifest)


def _send(channel: grpc.Channel, s: Stream, ledger: Ledger) -> Any:
    reply = pawprint_pb2_grpc.VerifierStub(channel).Submit(s.requests(), timeout=60)
    signed = SignedMessage(bytes(reply.payload), bytes(reply.signature), VERIFIER.public_key)
    receipt = check_receipt(signed, VERIFIER.public_key, s.signed, s.manifest, s.challenge)
    with ledger.lock:
        ledger.receipts.append(Got(s.model.name, signed, receipt))
    return receipt.verdict


def run(ws: Workspace, disk: Disk) -> dict[str, Any]:
    from protocol.wire import RemoteRegistry

    data = disk.mnt / "data"
    shutil.copytree(ws.pristine, data)
    steps: list[dict[str, Any]] = []
    ledger, rec = Ledger(), Recorder()

    def step(phase: str, what: str, fn: Callable[[], Any], expect: str) -> tuple[str, Any]:
        code, details, result = _call(fn)
        ok = {"OK": code == "OK",
              "OK or full": code == "OK" or (code == "RESOURCE_EXHAUSTED" and "storage is full" in details)}[expect]
        steps.append({"phase": phase, "call": what, "code": code, "details": details[:200],
                      "result": None if result is None else str(result)[:80], "expected": expect, "holds": ok,
                      "free_bytes": disk.free_bytes()})
        print(f"  [{phase}] {what}: {code} {details[:100]} -> {'holds' if ok else 'DOES NOT HOLD'}", flush=True)
        return code, result

    server = ServerProcess(serve_argv(ws, data), ws.root / "server.log")
    try:
        with ws.channel(server.target) as channel:
            remote = RemoteRegistry(channel, timeout_s=60)
            health = health_pb2_grpc.HealthStub(channel)
            model = ws.models[0]
            step("free", "Submit", lambda: _send(channel, _stream(channel, model, 0), ledger), "OK")
            step("free", "Publish", lambda: publish_once(remote, vendor_key(1), 1, "full-a", ws.log_pub, rec,
                                                          ledger), "OK")
            early = _stream(channel, model, 1)  # a challenge handed out while there was space
            left = disk.fill()
            print(f"disk full: {left} bytes free", flush=True)
            step("full", "Submit (challenge from before)", lambda: _send(channel, early, ledger), "OK or full")
            step("full", "GetChallenge", lambda: _stream(channel, model, 2).challenge.nonce.hex()[:12], "OK or full")
            step("full", "Publish", lambda: publish_once(remote, vendor_key(1), 2, "full-b", ws.log_pub, rec,
                                                          ledger), "OK or full")
            step("full", "LatestCheckpoint", lambda: "size " + remote.checkpoint().splitlines()[1], "OK")
            step("full", "entries (List)", lambda: len(remote.entries(0, 3)), "OK")
            def serving() -> str:
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(
                    health.Check(health_pb2.HealthCheckRequest(), timeout=5).status)
                if status != "SERVING":
                    raise RuntimeError(f"health is {status}")
                return status

            step("full", "Health", serving, "OK")
            disk.free()
            step("freed", "Submit (the same stream again)", lambda: _send(channel, early, ledger)
                 if not any(g.receipt.nonce == early.challenge.nonce for g in ledger.receipts) else "already answered",
                 "OK")
            step("freed", "Publish (the same again)", lambda: publish_once(remote, vendor_key(1), 2, "full-b",
                                                                            ws.log_pub, rec, ledger), "OK")
            step("freed", "Submit (fresh)", lambda: _send(channel, _stream(channel, model, 3), ledger), "OK")
            remote.close()
    finally:
        code = server.stop()
        disk.free()
    temps = sorted(str(p.relative_to(data)) for p in data.rglob("*.tmp"))
    audit = audit_data(ws, data, ledger)
    print(f"audit: {'passed' if audit['ok'] else audit['problems']}; temp files left: {temps}", flush=True)

    # A restart on a full disk, then with space again.
    disk.fill()
    restart: dict[str, Any] = {}
    try:
        again = ServerProcess(serve_argv(ws, data), ws.root / "server-restart-full.log")
    except RuntimeError as e:
        restart["full"] = {"started": False, "message": str(e)[-600:]}
    else:
        with ws.channel(again.target) as channel:
            c, d, _ = _call(lambda: _stream(channel, ws.models[0], 4))
        restart["full"] = {"started": True, "GetChallenge": c, "details": d[:200], "exit": again.stop()}
    disk.free()
    again = ServerProcess(serve_argv(ws, data), ws.root / "server-restart.log")
    with ws.channel(again.target) as channel:
        restart["freed"] = {"started": True, "Submit": _call(lambda: _send(channel, _stream(channel, ws.models[0], 5),
                                                                           ledger))[0]}
    restart["freed"]["exit"] = again.stop()
    print(f"restart: {restart}", flush=True)
    full = restart["full"]
    # On a full disk the server may start (and refuse writes) or refuse to start with one clear line.
    refused_cleanly = not full["started"] and "Traceback" not in full["message"] and "error" in full["message"]
    started_cleanly = full["started"] and full["GetChallenge"] in ("OK", "RESOURCE_EXHAUSTED")
    restart_ok = restart["freed"]["Submit"] == "OK" and (refused_cleanly or started_cleanly)
    return {"steps": steps, "server_exit": code, "temp_files_left": temps, "audit": audit, "restart": restart,
            "holds": all(s["holds"] for s in steps) and code == 0 and not temps and audit["ok"] and restart_ok}


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# A verifier whose disk fills up, on a real filesystem (issue #9, item 2)", "",
        f"Command: `{result['command']}`  ", f"Date: {result['date']}  ",
        f"Data directory on a {result['tmpfs_bytes'] // (1 << 20)} MiB tmpfs; a filler file takes every free byte "
        "when the disk is to be full. See `benchmarks/disk_full.py`.", "",
        "| phase | call | answer | details or result | free bytes after | holds |", "|---|---|---|---|---:|---|",
    ]
    for s in result["steps"]:
        said = (s["details"][:90] or (s["result"] or "")).replace("\n", " ").replace("|", "/")
        lines.append(f"| {s['phase']} | {s['call']} | {s['code']} | {said} | {s['free_bytes']:,} | "
                     f"{'yes' if s['holds'] else '**no**'} |")
    a = result["audit"]
    r = result["restart"]
    lines += [
        "", f"Server exit after SIGTERM: {result['server_exit']}. "
        f"Temp files left: {result['temp_files_left'] or 'none'}.",
        f"Audit of the data directory: {a['receipts_received']} receipts received, {a['stored_submissions']} stored, "
        f"lost {a['missing']}, duplicated {a['duplicated_stored']}; log from the first checkpoint: "
        f"{'**passed**' if a['ok'] else a['problems']}.", "",
        f"Restart with the disk full: {json.dumps(r['full'])}  ",
        f"Restart with space again: {json.dumps(r['freed'])}", "",
        f"**Everything expected held: {'yes' if result['holds'] else 'NO'}.**",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.disk_full", description=__doc__.splitlines()[0])
    p.add_argument("--tmpfs-mib", type=int, default=64)
    p.add_argument("--workdir", type=Path, default=OUT)
    p.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "disk_full.json")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("python -m benchmarks.disk_full: needs root (it mounts a tmpfs); nothing was run", file=sys.stderr)
        return 2
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ws = prepare(args.workdir / "ws", owners=8, vendors=2)
    disk = Disk(args.workdir / "mnt", args.tmpfs_mib << 20)
    try:
        command = " ".join(["python -m benchmarks.disk_full", *(argv if argv is not None else sys.argv[1:])])
        result = {"command": command,
                  "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
                  "tmpfs_bytes": disk.size, **run(ws, disk)}
    finally:
        disk.unmount()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result) + "\n")
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}; everything expected held: {result['holds']}",
          file=sys.stderr)
    return 0 if result["holds"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
