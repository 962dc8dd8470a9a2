"""The verifier's configuration: how the server listens (``ServerConfig``, ``TlsConfig``) and what the
services accept (limits, null, encoder, screen, roles and rates), checked before anything starts.

Both the service logic (``verifier._service``) and the gRPC server around it (``verifier._server``) read it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from protocol import DEFAULT_SKETCH, SKETCH_MAX, SKETCH_MIN, SubmissionLimits
from protocol.wire import LOOPBACK_HOSTS
from verifier._access import ClientRoles, RateLimits, SubmissionBudget
from verifier._calibration import DEFAULT_THRESHOLDS, Thresholds
from verifier.errors import ConfigError

# Room for protobuf framing around the largest manifest or chunk the limits allow.
_MESSAGE_OVERHEAD = 64 * 1024


@dataclass(frozen=True)
class TlsConfig:
    """Server TLS material (PEM); with ``client_ca`` clients must present a certificate it signed."""

    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None = None

    @classmethod
    def from_files(cls, cert: Path | str, key: Path | str, client_ca: Path | str | None = None) -> TlsConfig:
        def read(path: Path | str) -> bytes:
            try:
                return Path(path).read_bytes()
            except OSError as e:
                raise ConfigError(f"cannot read {path}: {e.strerror or e}") from e

        return cls(read(cert), read(key), read(client_ca) if client_ca is not None else None)


@dataclass(frozen=True)
class ServerConfig:
    """How the server listens and what it accepts. ``stream_timeout_s`` bounds one submission stream."""

    listen: str = "127.0.0.1:0"
    tls: TlsConfig | None = None
    insecure_loopback: bool = False
    limits: SubmissionLimits = field(default_factory=lambda: SubmissionLimits(max_manifest_bytes=3 * 1024 * 1024))
    max_message_bytes: int = 4 * 1024 * 1024
    challenge_ttl_s: int = 900
    stream_timeout_s: float = 900.0
    stream_idle_timeout_s: float = 60.0  # the longest silence a stream may keep, its first message included
    max_concurrent_compares: int = max(1, os.cpu_count() or 1)  # comparisons and pictures at once (CPU-bound)
    max_workers: int = 16  # threads for the blocking work (checks, spooling, comparing, the store)
    # Calls of all clients at once (a waiting call costs memory, not a thread: verifier._server).
    max_concurrent_rpcs: int = 4096
    first_message_timeout_s: float = 10.0  # a stream's first message must arrive this soon after it opens
    max_waiting_per_client: int = 1024  # streams of one client awaiting their first message; the oldest goes
    max_streams_per_client: int = 64  # streams of one client (and of one address) past their first message
    max_streams_per_key: int = 8  # submissions in progress per owner signing key
    layers: str = "last2"
    method: str = "pawprint"
    allow_keep_invariants: bool = True
    null_path: str | None = None  # the measured null (default: the one shipped, verifier/data/null-zoo-v1.json)
    thresholds: Thresholds = DEFAULT_THRESHOLDS
    encoder: str = "default"  # verifier._encoder.load_encoder name; receipts carry its id
    null_sha256: str | None = None  # pin an operator's own null file (the shipped ones are pinned in code)
    probe_set_pins: frozenset[str] | None = None  # offer only these probe set ids; refuse to start otherwise
    client_roles: ClientRoles | None = None  # client certificate -> roles (needs mutual TLS)
    # Per signing key (and, with per_caller, per client for challenges and reads); on by default (None: off).
    rate_limits: RateLimits | None = field(default_factory=lambda: RateLimits(per_caller=False))
    # Per owner key and day: submissions, and degenerate or near-duplicate ones (issue 16); None: off.
    submission_budget: SubmissionBudget | None = field(default_factory=SubmissionBudget)
    drain_grace_s: float = 30.0  # how long shutdown waits for in-flight submissions and publishes
    # Registries with more than screen_k bases are screened (verifier._screen): the screen_k best by sketch,
    # and every base whose estimated ICS reaches screen_floor, are compared exactly. 0: compare every base.
    screen_k: int = 16
    screen_floor: float = 0.05
    # Refuse a submission whose owner does not show it holds the committed weights (verifier._possession).
    require_possession: bool = False
    # Ask owners for k x k public sketches of their terms instead of the terms (issue 16; protocol._sketch;
    # k = 256 chosen by measurement, docs/results/sketches.md); 0: the terms themselves. Sketched submissions are
    # judged with sketch_null_path (default: the shipped null for k = 256).
    sketch: int = DEFAULT_SKETCH
    sketch_null_path: str | None = None

    def check(self) -> None:
        host, _ = split_host_port(self.listen)
        if self.tls is None:
            if not self.insecure_loopback:
                raise ConfigError("no TLS certificate and key given (plaintext needs --insecure-loopback)")
            if host not in LOOPBACK_HOSTS:
                raise ConfigError(f"plaintext is allowed only on 127.0.0.1 or ::1, not on {host!r}")
        elif self.insecure_loopback:
            raise ConfigError("--insecure-loopback and TLS are exclusive")
        if self.client_roles is not None and (self.tls is None or self.tls.client_ca is None):
            raise ConfigError("client roles need mutual TLS (--client-ca)")
        if self.drain_grace_s < 0:
            raise ConfigError("the drain grace period cannot be negative")
        if self.stream_idle_timeout_s <= 0 or self.stream_timeout_s <= 0 or self.max_concurrent_compares < 1:
            raise ConfigError("stream timeouts and the compare limit must be positive")
        if self.first_message_timeout_s <= 0:
            raise ConfigError("the first-message timeout must be positive")
        if min(self.max_workers, self.max_concurrent_rpcs, self.max_waiting_per_client, self.max_streams_per_client,
               self.max_streams_per_key) < 1:
            raise ConfigError("worker, call and stream limits must be at least 1")
        if self.screen_k < 0 or not -1.0 <= self.screen_floor <= 1.0:
            raise ConfigError("--screen-k must be >= 0 and --screen-floor an ICS in [-1, 1]")
        if self.sketch and not SKETCH_MIN <= self.sketch <= SKETCH_MAX:
            raise ConfigError(f"--sketch must be 0 (send the terms) or between {SKETCH_MIN} and {SKETCH_MAX}")
        room = self.max_message_bytes - _MESSAGE_OVERHEAD
        if self.limits.max_chunk_bytes > room or self.limits.max_manifest_bytes > room:
            raise ConfigError("chunks and manifests must be well below the gRPC message limit")


def split_host_port(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"expected HOST:PORT, got {address!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)

