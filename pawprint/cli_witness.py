"""The witness's commands: ``pawprint witness key | serve`` (C2SP tlog-witness; ``witness/``).

``witness key`` writes the witness's cosigning public key (derived from its pawprint key) for trust stores and
prints its C2SP verifier key; ``witness serve`` answers ``POST /add-checkpoint`` for the logs named by their
C2SP verifier keys (what ``registry checkpoint`` prints), keeping its state in one file across restarts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from pawprint._common import EXIT_OK, CommandError, passphrase_option, private_key, write_json


def cmd_witness_key(args: argparse.Namespace) -> int:
    from protocol import witness_signing_key, witness_verifier_key

    key = witness_signing_key(private_key(args.key, args.passphrase_env)).public_key
    vkey = witness_verifier_key(args.name, key)
    if args.output:
        try:
            key.save(args.output)
        except OSError as e:
            raise CommandError(f"cannot write {args.output}: {e.strerror or e}") from e
    if args.json:
        write_json({"name": args.name, "verifier_key": vkey, "key_id": key.key_id, "pub": args.output})
        return EXIT_OK
    print(f"witness {args.name}: cosignature verifier key {vkey}")
    if args.output:
        print(f"its public key (trust it with: pawprint trust add TRUST {args.output} --role witness "
              f"--name {args.name}): {args.output}")
    return EXIT_OK


def cmd_witness_serve(args: argparse.Namespace) -> int:
    from protocol import parse_verifier_key
    from witness import Witness, WitnessStateError, serve_forever

    logs = {}
    for text in args.log:
        try:
            origin, key = parse_verifier_key(text)
        except ValueError as e:
            raise CommandError(f"--log {text!r:.80}: {e}") from e
        logs[origin] = key
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        raise CommandError(f"--listen is HOST:PORT, not {args.listen!r}")
    try:
        witness = Witness(private_key(args.key, args.passphrase_env), args.name, logs, args.state,
                          clock=time.time, max_skew_s=args.max_skew)
    except WitnessStateError as e:
        raise CommandError(str(e)) from e

    def listening(bound: int) -> None:
        if args.json:
            print(json.dumps({"listening": f"{host}:{bound}", "url": f"http://{host}:{bound}", "name": args.name,
                              "verifier_key": witness.verifier_key, "logs": sorted(logs)}, sort_keys=True), flush=True)
        else:
            print(f"witness {args.name} listening on http://{host}:{bound} for {len(logs)} log(s); "
                  f"verifier key {witness.verifier_key}", flush=True)
        sys.stdout.flush()

    try:
        serve_forever(witness, host, int(port), on_listening=listening, verbose=args.verbose)
    except OSError as e:
        raise CommandError(f"cannot listen on {args.listen}: {e.strerror or e}") from e
    finally:
        witness.close()
    return EXIT_OK


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from protocol._witness import MAX_CLOCK_SKEW_S

    w = sub.add_parser("witness", help="a C2SP tlog-witness for registry logs").add_subparsers(
        dest="witness_command", required=True)
    k = w.add_parser("key", help="the witness's cosigning public key and C2SP verifier key")
    k.add_argument("--key", required=True, metavar="KEY", help="the witness's pawprint private key")
    k.add_argument("--name", required=True, help="the name it cosigns under (no spaces or '+')")
    k.add_argument("-o", "--output", default=None, metavar="PUB", help="write the cosigning public key here")
    k.add_argument("--json", action="store_true")
    passphrase_option(k)
    k.set_defaults(func=cmd_witness_key)
    s = w.add_parser("serve", help="answer POST /add-checkpoint (C2SP tlog-witness) until interrupted")
    s.add_argument("--key", required=True, metavar="KEY", help="the witness's pawprint private key")
    s.add_argument("--name", required=True, help="the name it cosigns under (no spaces or '+')")
    s.add_argument("--state", required=True, metavar="FILE",
                   help="where it keeps the latest checkpoint it cosigned per log (created if missing)")
    s.add_argument("--log", action="append", required=True, metavar="VKEY",
                   help="a log it witnesses, by its C2SP verifier key (printed by `registry checkpoint`)")
    s.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT")
    s.add_argument("--max-skew", type=int, default=MAX_CLOCK_SKEW_S, metavar="S",
                   help=f"refuse checkpoints dated more than S seconds ahead of this clock "
                        f"(default {MAX_CLOCK_SKEW_S})")
    s.add_argument("--verbose", action="store_true", help="log each request on stderr")
    s.add_argument("--json", action="store_true", help="print where it listens as one JSON line")
    passphrase_option(s)
    s.set_defaults(func=cmd_witness_serve)
