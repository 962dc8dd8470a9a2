"""The verifier's commands: ``pawprint verifier serve | health | test-certs`` (the verifier extra).

``serve`` parses its options into a ``verifier.ServerConfig``, starts the server, says where it listens
(``listening on HOST:PORT``, the first line on stdout; with ``--json`` that line is a JSON object) and hands the
process to ``verifier``'s ``run_until_signalled`` (drain on SIGTERM/SIGINT, stop, exit).

``health`` asks a running verifier the standard ``grpc.health.v1.Health/Check`` for the server ("") and both
services: exit 0 when all are SERVING, 1 when one is not, 3 when nothing answers. It needs ``grpc_health`` (the
verifier extra) but not the verifier itself, so it runs wherever a monitor runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from typing import TYPE_CHECKING

from pawprint._common import (
    EXIT_CHECK_FAILED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    UNAVAILABLE_CODES,
    VERIFIER_EXTRA_HINT,
    CommandError,
    passphrase_option,
    private_key,
    reaching,
    thresholds,
    tls_client_options,
    verdict_options,
    verifier_extra_missing,
    write_json,
)
from pawprint.cli_registry import max_probe_sets_option, open_remote
from protocol import DEFAULT_SKETCH

# verifier.SERVICE_NAME and REGISTRY_SERVICE_NAME, repeated so that ``health`` needs no verifier (a test checks
# they agree); "" is the server as a whole.
HEALTH_SERVICES = ("", "pawprint.v1.Verifier", "pawprint.v1.Registry")

if TYPE_CHECKING:
    from verifier import RateLimits


def _rate_limits(args: argparse.Namespace) -> RateLimits:
    from verifier import RateLimits

    default = RateLimits()
    if args.rate_limit_rpm is None and args.rate_limit_bytes_per_hour is None and args.rate_limit_burst is None:
        return RateLimits(per_caller=False)  # on by default per signing key (issue 16; verifier._access)
    return RateLimits(requests_per_minute=args.rate_limit_rpm or default.requests_per_minute,
                      burst=args.rate_limit_burst or default.burst,
                      bytes_per_hour=args.rate_limit_bytes_per_hour or default.bytes_per_hour)


def cmd_verifier_serve(args: argparse.Namespace) -> int:
    from protocol import TrustStore
    from verifier import (
        ClientRoles,
        ConfigError,
        Registry,
        ServerConfig,
        SubmissionBudget,
        TlsConfig,
        VerifierService,
        run_until_signalled,
        start,
    )
    from verifier._lifecycle import HEAP_TRIM_INTERVAL_S, HeapTrimmer, limit_malloc_arenas

    logging.basicConfig(level=getattr(logging, args.log_level), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # Before any thread of the server exists (docs/hardening.md, section 8).
    logging.getLogger("pawprint.verifier").info("%s", limit_malloc_arenas())
    HeapTrimmer(HEAP_TRIM_INTERVAL_S).start()
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigError("TLS needs both --tls-cert and --tls-key")
    if args.client_ca is not None and args.tls_cert is None:
        raise ConfigError("--client-ca needs --tls-cert and --tls-key")
    tls = TlsConfig.from_files(args.tls_cert, args.tls_key, args.client_ca) if args.tls_cert else None
    key = private_key(args.key, args.passphrase_env)
    trust = TrustStore.load(args.trust)
    registry = Registry(args.data, log_key=private_key(args.log_key, None) if args.log_key else None,
                        max_probe_sets=args.max_probe_sets)
    from pawprint.cli_registry import witness_set

    registry.witnesses = witness_set(args, trust)  # each base published over gRPC is sent to them
    rates = _rate_limits(args)
    if args.client_roles is not None and args.client_ca is None:
        raise ConfigError("--client-roles needs mutual TLS (--client-ca)")
    config = ServerConfig(
        listen=args.listen, tls=tls, insecure_loopback=args.insecure_loopback, null_path=args.null,
        thresholds=thresholds(args), layers=args.layers, null_sha256=args.null_sha256,
        probe_set_pins=frozenset(args.probe_set_pin) if args.probe_set_pin else None,
        client_roles=ClientRoles.load(args.client_roles) if args.client_roles else None,
        rate_limits=rates, drain_grace_s=args.drain_grace, max_concurrent_rpcs=args.max_concurrent_rpcs,
        max_workers=args.max_workers, stream_timeout_s=args.stream_timeout, screen_k=args.screen_k,
        screen_floor=args.screen_floor, stream_idle_timeout_s=args.stream_idle_timeout,
        first_message_timeout_s=args.first_message_timeout, max_waiting_per_client=args.max_waiting_per_client,
        max_streams_per_client=args.max_streams_per_client, max_streams_per_key=args.max_streams_per_key,
        require_possession=args.require_possession, sketch=args.sketch, sketch_null_path=args.sketch_null,
        submission_budget=SubmissionBudget(submissions_per_day=args.submissions_per_day,
                                           suspicious_per_day=args.suspicious_per_day),
        **({"max_concurrent_compares": args.max_concurrent_compares} if args.max_concurrent_compares else {}),
    )
    try:
        running = start(VerifierService(key, trust, registry, config), max_connections=args.max_connections)
    except BaseException:
        registry.close()
        raise
    host = args.listen.rpartition(":")[0]
    logger = logging.getLogger("pawprint.verifier")
    logger.info(
        "registry log %s: %d entries, signed by key %s (auditors need its public key, %s/log.pub)", registry.origin,
        registry.size(), registry.log_public_key.key_id, args.data)
    if args.json:
        write_json_line({"listening": f"{host}:{running.port}", "port": running.port,
                         "log_key_id": registry.log_public_key.key_id})
    else:
        print(f"listening on {host}:{running.port}", flush=True)
    run_until_signalled(running, registry, drain_grace_s=config.drain_grace_s, logger=logger)


def write_json_line(value: object) -> None:
    import json

    print(json.dumps(value, sort_keys=True), flush=True)


def cmd_verifier_health(args: argparse.Namespace) -> int:
    import grpc

    try:
        from grpc_health.v1 import health_pb2, health_pb2_grpc
    except ImportError as e:
        if verifier_extra_missing(e):
            raise CommandError(f"verifier health {VERIFIER_EXTRA_HINT}") from e
        raise
    services = tuple(args.service) if args.service else HEALTH_SERVICES
    status: dict[str, str] = {}
    with open_remote(args, args.address) as channel, reaching(args.address):
        stub = health_pb2_grpc.HealthStub(channel)
        for name in services:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=args.timeout)
            except grpc.RpcError as e:
                code = e.code() if callable(getattr(e, "code", None)) else None
                if code is not None and code.name in UNAVAILABLE_CODES:
                    raise CommandError(f"{args.address}: no answer to a health check ({code.name}: "
                                       f"{e.details() if callable(getattr(e, 'details', None)) else ''})",
                                       code=EXIT_UNAVAILABLE, kind="Unavailable") from None
                if code is not None and code.name == "NOT_FOUND":
                    status[name] = "SERVICE_UNKNOWN"  # the server does not know this service
                    continue
                raise CommandError(f"{args.address}: the health check of {name or 'the server'!s} failed "
                                   f"({code.name if code else 'UNKNOWN'})", code=EXIT_UNAVAILABLE,
                                   kind="RemoteFailure") from None
            status[name] = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    serving = all(v == "SERVING" for v in status.values())
    if args.json:
        write_json({"address": args.address, "serving": serving, "status": "SERVING" if serving else "NOT_SERVING",
                    "services": status})
    else:
        print(f"{args.address}: {'SERVING' if serving else 'NOT_SERVING'}")
        for name, state in status.items():
            print(f"  {name or '(server)':24s} {state}")
    return EXIT_OK if serving else EXIT_CHECK_FAILED


def cmd_verifier_test_certs(args: argparse.Namespace) -> int:
    from verifier import write_test_pki

    pki = write_test_pki(args.output, now=dt.datetime.now(dt.UTC), hosts=args.host or ("localhost", "127.0.0.1", "::1"))
    if args.json:
        write_json({"ca": str(pki.ca), "server_cert": str(pki.server_cert), "server_key": str(pki.server_key),
                    "client_cert": str(pki.client_cert), "client_key": str(pki.client_key)})
        return EXIT_OK
    print(f"wrote {pki.ca}, {pki.server_cert}, {pki.server_key}, {pki.client_cert}, {pki.client_key} "
          "(loopback tests and demos only)")
    return EXIT_OK


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``pawprint verifier ...``."""
    ver = sub.add_parser("verifier", help="the verifier service").add_subparsers(dest="verifier_command", required=True)
    srv = ver.add_parser("serve", help="serve challenges and submissions over gRPC")
    srv.add_argument("--data", required=True, metavar="DIR")
    srv.add_argument("--listen", required=True, metavar="HOST:PORT", help="port 0 picks a free port")
    srv.add_argument("--key", required=True, metavar="KEY", help="the verifier's signing key")
    srv.add_argument("--trust", required=True, metavar="TRUST")
    srv.add_argument("--witness", action="append", default=[], metavar="URL",
                     help="send each new log checkpoint to this witness and keep its cosignature (repeatable; its key "
                          "trusted in --trust as role witness)")
    srv.add_argument("--tls-cert", default=None, metavar="C")
    srv.add_argument("--tls-key", default=None, metavar="K")
    srv.add_argument("--client-ca", default=None, metavar="CA", help="require client certificates signed by CA")
    srv.add_argument("--insecure-loopback", action="store_true", help="plaintext, only on 127.0.0.1 or ::1")
    srv.add_argument("--log-key", default=None, metavar="KEY",
                     help="the registry log's signing key (default DIR/log.key, created with the registry)")
    max_probe_sets_option(srv)
    srv.add_argument("--layers", default="last2", choices=("last2", "all"),
                     help="the layers owners must send: 'all' lets depth-pruned and upscaled models be matched")
    srv.add_argument("--client-roles", default=None, metavar="FILE",
                     help="client certificate -> roles (pawprint-client-roles/1 JSON; needs --client-ca)")
    srv.add_argument("--rate-limit-rpm", type=float, default=None, metavar="N",
                     help="requests per minute per signing key (and per client for challenges and reads)")
    srv.add_argument("--rate-limit-burst", type=int, default=None, metavar="N", help="burst size (default 60)")
    srv.add_argument("--rate-limit-bytes-per-hour", type=int, default=None, metavar="N",
                     help="term bytes per hour per signing key")
    srv.add_argument("--submissions-per-day", type=int, default=200, metavar="N",
                     help="submissions per owner key and rolling day (default 200; issue 16's budget)")
    srv.add_argument("--suspicious-per-day", type=int, default=20, metavar="N",
                     help="degenerate or near-duplicate submissions per owner key and day before the key is refused "
                          "(default 20)")
    srv.add_argument("--null-sha256", default=None, metavar="HEX", help="pin the digest of the --null file")
    srv.add_argument("--probe-set-pin", action="append", default=None, metavar="ID",
                     help="offer only this probe set id (repeat); refuse to start if the registry offers others")
    srv.add_argument("--drain-grace", type=float, default=30.0, metavar="S",
                     help="on SIGTERM/SIGINT, let in-flight submissions finish for up to S seconds")
    srv.add_argument("--max-concurrent-rpcs", type=int, default=4096, metavar="N",
                     help="calls beyond N at once (all clients) are refused with RESOURCE_EXHAUSTED; a call waiting "
                          "for its client costs memory, not a thread")
    srv.add_argument("--max-connections", type=int, default=2048, metavar="N",
                     help="connections open at once (all clients); beyond N a new connection is closed at accept. "
                          "This, not the number of calls, bounds the server's memory under a crowd")
    srv.add_argument("--max-workers", type=int, default=16, metavar="N",
                     help="threads for the blocking work (checks, comparing, the store), shared fairly by clients")
    srv.add_argument("--first-message-timeout", type=float, default=10.0, metavar="S",
                     help="a stream whose first message has not arrived S seconds after it opened is cut off")
    srv.add_argument("--max-waiting-per-client", type=int, default=1024, metavar="N",
                     help="streams of one client (certificate, else address) waiting for their first message; "
                          "beyond N its oldest waiting stream is dropped")
    srv.add_argument("--max-streams-per-client", type=int, default=64, metavar="N",
                     help="streams of one client (and of one address) past their first message; beyond N: "
                          "RESOURCE_EXHAUSTED with a retry hint")
    srv.add_argument("--max-streams-per-key", type=int, default=8, metavar="N",
                     help="submissions in progress per owner signing key")
    srv.add_argument("--stream-timeout", type=float, default=900.0, metavar="S",
                     help="a submission or publish stream is cut off after S seconds")
    srv.add_argument("--stream-idle-timeout", type=float, default=60.0, metavar="S",
                     help="a stream silent for S seconds (before its first message too) is cut off")
    srv.add_argument("--max-concurrent-compares", type=int, default=None, metavar="N",
                     help="comparisons and pictures computed at once (default: the number of CPUs)")
    srv.add_argument("--screen-k", type=int, default=16, metavar="K",
                     help="above K bases, compare exactly only the K best by sketch (and any reaching the floor); "
                          "0 compares every base")
    srv.add_argument("--screen-floor", type=float, default=0.05, metavar="ICS",
                     help="a base whose screen estimate reaches this is always compared exactly")
    srv.add_argument("--require-possession", action="store_true",
                     help="refuse (PERMISSION_DENIED) a submission whose owner does not open chunks of the weights "
                          "it commits to (owner submit --possession-chunk): against owners claiming another's "
                          "commitment")
    srv.add_argument("--sketch", type=int, default=DEFAULT_SKETCH, metavar="K",
                     help="ask owners for public K x K sketches of their terms instead of the terms (issue 16; "
                          f"docs/results/sketch_null.md; default {DEFAULT_SKETCH}, whose null is shipped): the "
                          "verifier sees far fewer numbers of a wide model; 0 asks for the terms themselves")
    srv.add_argument("--sketch-null", default=None, metavar="FILE",
                     help="the null that judges sketched submissions (default: the shipped one for --sketch)")
    srv.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    srv.add_argument("--json", action="store_true",
                     help='the first line on stdout is {"listening": "HOST:PORT", "port": N, "log_key_id": ...}')
    passphrase_option(srv)
    verdict_options(srv)
    srv.set_defaults(func=cmd_verifier_serve)
    tc = ver.add_parser("test-certs", help="write a throwaway CA, server and client certificate (loopback only)")
    tc.add_argument("-o", "--output", required=True, metavar="DIR")
    tc.add_argument("--host", action="append", default=None, help="a name or address for the server certificate")
    tc.add_argument("--json", action="store_true")
    tc.set_defaults(func=cmd_verifier_test_certs)

    hc = ver.add_parser("health", help="ask a running verifier whether it is serving (exit 0 serving, 1 not "
                                       "serving, 3 unreachable)")
    hc.add_argument("address", metavar="HOST:PORT")
    hc.add_argument("--service", action="append", default=None, metavar="NAME",
                    help="check only this service (repeat; '' is the server); default: the server and both services")
    tls_client_options(hc, "verifier")
    hc.add_argument("--timeout", type=float, default=5.0, metavar="S", help="seconds per check (default 5)")
    hc.add_argument("--json", action="store_true")
    hc.set_defaults(func=cmd_verifier_health)

    from pawprint import cli_refit_null  # verifier refit-null: a null fitted on the registry's own bases

    cli_refit_null.add_parser(ver)
