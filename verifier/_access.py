"""Who may call what, and how much: client certificates mapped to roles, and per-key rate and byte limits.

**Client roles** (``ClientRoles``, ``verifier serve --client-roles FILE``, needs mutual TLS). The file lists
the client certificates the verifier knows, each by the SHA-256 of its DER encoding::

    {"format": "pawprint-client-roles/1",
     "clients": [{"name": "acme-release", "cert_sha256": "<64 hex>", "roles": ["vendor"],
                  "keys": ["<signing key id>", ...]}]}

``roles`` are ``owner`` (challenges and submissions), ``vendor`` (publish and revoke) and ``reader`` (the
registry's read RPCs; every listed client may read). ``keys``, if given, are the only signing keys that
client may use, so a signing key stolen from one machine is useless from another. A certificate listed
twice is refused when the file is loaded (never counted twice). A client whose certificate is not listed
is ``PERMISSION_DENIED``. Signatures are still checked against the trust store as before: the certificate
says who is on the line, the signature who vouches for the content.

**Rate limits** (``RateLimiter``): per signing key (its id is the SHA-256 of the public key, so one key has
one budget however often the trust store lists it), a token bucket of requests (``requests_per_minute``,
``burst``) and one of bytes (``bytes_per_hour``); challenges are counted against the client's certificate
(or its address on loopback), since a challenge request is not signed. Exceeding either is
``RESOURCE_EXHAUSTED`` with the wait in the message. Time is injected. On by default for signing keys
(``ServerConfig``: 600 requests a minute in bursts of 60, 64 GiB of terms an hour per key); the per-client
count of challenges and reads only where set (``RateLimits.per_caller``, the ``--rate-limit-*`` flags).

**Submission budgets** (``SubmissionBudget``, ``SubmissionGuard``; issue 16): per owner key and rolling day,
200 submissions, of which at most 20 degenerate (the evidence checks found them implausible or insufficient)
or near-duplicates of the key's recent submissions. They bound what an owner can learn of the registered bases
by choosing its submissions (docs/results/privacy.md). On by default.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from protocol import JsonError, loads_strict
from verifier.errors import ConfigError, LimitExceeded, PermissionDenied

FORMAT = "pawprint-client-roles/1"
OWNER, VENDOR, READER = "owner", "vendor", "reader"
ROLES = frozenset({OWNER, VENDOR, READER})
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Client:
    """One known client certificate."""

    name: str
    cert_sha256: str
    roles: frozenset[str]
    keys: frozenset[str] | None = None  # the signing keys it may use; None: any trusted key


@dataclass(frozen=True)
class Caller:
    """Who is on the line: the client's certificate fingerprint (None without mutual TLS), its entry in
    the roles file (None where no roles file is configured) and a stable identity for counting."""

    identity: str
    cert_sha256: str | None = None
    client: Client | None = None


def cert_fingerprint(pem_or_der: bytes) -> str:
    """Hex SHA-256 of a certificate's DER encoding (what ``openssl x509 -fingerprint -sha256`` prints)."""
    try:
        cert = (x509.load_pem_x509_certificate(pem_or_der) if pem_or_der.lstrip().startswith(b"-----")
                else x509.load_der_x509_certificate(pem_or_der))
    except ValueError as e:
        raise ConfigError(f"not a certificate: {e}") from e
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


class ClientRoles:
    """The roles file: certificate fingerprint -> ``Client``."""

    def __init__(self, clients: Iterable[Client]) -> None:
        self._by_cert: dict[str, Client] = {}
        for c in clients:
            if c.cert_sha256 in self._by_cert:
                raise ConfigError(f"client certificate {c.cert_sha256} is listed twice "
                                  f"({self._by_cert[c.cert_sha256].name!r} and {c.name!r})")
            self._by_cert[c.cert_sha256] = c

    def __len__(self) -> int:
        return len(self._by_cert)

    def get(self, cert_sha256: str | None) -> Client | None:
        return self._by_cert.get(cert_sha256) if cert_sha256 else None

    @classmethod
    def from_json(cls, data: bytes) -> ClientRoles:
        try:
            doc = loads_strict(data)
        except JsonError as e:
            raise ConfigError(f"the client roles file is not valid JSON: {e}") from e
        if not isinstance(doc, dict) or set(doc) != {"format", "clients"} or doc["format"] != FORMAT:
            raise ConfigError(f'the client roles file must be {{"format": "{FORMAT}", "clients": [...]}}')
        if not isinstance(doc["clients"], list):
            raise ConfigError('"clients" must be a list')
        return cls(_client(i, item) for i, item in enumerate(doc["clients"]))

    @classmethod
    def load(cls, path: Path | str) -> ClientRoles:
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise ConfigError(f"cannot read {path}: {e.strerror or e}") from e
        try:
            return cls.from_json(data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None


def _client(index: int, item: Any) -> Client:
    where = f"clients[{index}]"
    if not isinstance(item, dict) or not {"name", "cert_sha256", "roles"} <= set(item) <= {
            "name", "cert_sha256", "roles", "keys"}:
        raise ConfigError(f"{where} must have name, cert_sha256, roles and may have keys")
    name, fp, roles, keys = item["name"], item["cert_sha256"], item["roles"], item.get("keys")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}.name must be a non-empty string")
    if not isinstance(fp, str) or _HEX64.fullmatch(fp) is None:
        raise ConfigError(f"{where}.cert_sha256 must be 64 lowercase hex characters")
    if not isinstance(roles, list) or not roles or not set(roles) <= ROLES or len(set(roles)) != len(roles):
        raise ConfigError(f"{where}.roles must be a non-empty list of distinct roles from {sorted(ROLES)}")
    if keys is not None and (not isinstance(keys, list) or not all(
            isinstance(k, str) and _HEX64.fullmatch(k) for k in keys)):
        raise ConfigError(f"{where}.keys must be a list of key ids (64 lowercase hex characters)")
    return Client(name, fp, frozenset(roles), frozenset(keys) if keys is not None else None)


def authorize(caller: Caller | None, roles: ClientRoles | None, role: str, key_id: str | None = None) -> None:
    """Refuse ``caller`` unless its certificate is listed with ``role`` (``reader`` is any listed client)
    and, where the client is bound to keys, ``key_id`` is one of them. No roles file: no restriction."""
    if roles is None:
        return
    client = caller.client if caller is not None else None
    if client is None:
        raise PermissionDenied("this client certificate is not known to the verifier")
    if role != READER and role not in client.roles:
        raise PermissionDenied(f"this client certificate is not allowed the {role} role")
    if key_id is not None and client.keys is not None and key_id not in client.keys:
        raise PermissionDenied("this client certificate may not use that signing key")


@dataclass(frozen=True)
class RateLimits:
    """Per key: ``requests_per_minute`` with bursts of ``burst``, and ``bytes_per_hour`` of terms.
    ``per_caller``: also count the unsigned calls (challenges, registry reads) per client certificate or address.
    ``ServerConfig``'s default leaves it off: behind one address (loopback, a NAT) every client would share one
    bucket, so one flooding client would lock the others out; the other caps of ``ServerConfig`` bound those
    calls. ``verifier serve --rate-limit-*`` turns it on."""

    requests_per_minute: float = 600.0
    burst: int = 60
    bytes_per_hour: int = 64 * 1024**3
    per_caller: bool = True

    def __post_init__(self) -> None:
        if self.requests_per_minute <= 0 or self.burst < 1 or self.bytes_per_hour < 1:
            raise ConfigError("rate limits must be positive")


@dataclass
class _Bucket:
    requests: float
    nbytes: float
    at: float


@dataclass
class RateLimiter:
    """Token buckets per identity (a key id, or a client certificate for challenges); thread-safe."""

    limits: RateLimits
    clock: Callable[[], float]
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def charge(self, identity: str, *, requests: int = 1, nbytes: int = 0) -> None:
        """Take ``requests`` and ``nbytes`` from ``identity``'s buckets, or raise ``LimitExceeded`` (taking
        nothing). A single request larger than the whole byte budget can never pass and says so."""
        lim = self.limits
        byte_rate = lim.bytes_per_hour / 3600.0
        if nbytes > lim.bytes_per_hour:
            raise LimitExceeded(f"{nbytes} bytes is more than this verifier accepts per key per hour "
                                f"({lim.bytes_per_hour})")
        now = self.clock()
        with self._lock:
            b = self._buckets.get(identity)
            if b is None:
                b = self._buckets[identity] = _Bucket(float(lim.burst), float(lim.bytes_per_hour), now)
            elapsed = max(0.0, now - b.at)
            b.requests = min(float(lim.burst), b.requests + elapsed * lim.requests_per_minute / 60.0)
            b.nbytes = min(float(lim.bytes_per_hour), b.nbytes + elapsed * byte_rate)
            b.at = now
            if b.requests < requests:
                wait = (requests - b.requests) * 60.0 / lim.requests_per_minute
                raise LimitExceeded(f"rate limit: too many requests for this key; retry in {wait:.1f} s", wait)
            if b.nbytes < nbytes:
                wait = (nbytes - b.nbytes) / byte_rate
                raise LimitExceeded(f"rate limit: too many bytes for this key; retry in {wait:.0f} s", wait)
            b.requests -= requests
            b.nbytes -= nbytes
            if len(self._buckets) > 100_000:  # forget idle identities (a full bucket is the same as none)
                for k in [k for k, v in self._buckets.items() if now - v.at > 3600]:
                    del self._buckets[k]


@dataclass(frozen=True)
class SubmissionBudget:
    """Per owner signing key and rolling day (issue 16): at most ``submissions_per_day`` submissions, of which at
    most ``suspicious_per_day`` may be suspicious: a degenerate submission (one the evidence checks find
    implausible or insufficient, ``verifier._evidence``) or a near-duplicate (its terms' sketch within cosine
    ``near_duplicate_cosine`` of one of the key's last ``remembered`` submissions). Adaptive probing of the
    registry's bases needs hundreds of chosen submissions (docs/results/privacy.md); an honest owner sends a few
    models a day. Past either budget a submission is ``RESOURCE_EXHAUSTED`` before it is compared.

    The defaults (200 and 20 a day) are on in every ``ServerConfig``. The counts are kept in the data directory
    (``BudgetLedger``: a restart keeps them, and every process serving the directory counts against one budget;
    two processes admitting at the same moment may each pass the last slot). The sketches that tell a
    near-duplicate are kept by each process, in memory."""

    submissions_per_day: int = 200
    suspicious_per_day: int = 20
    near_duplicate_cosine: float = 0.99
    remembered: int = 64

    def __post_init__(self) -> None:
        if self.submissions_per_day < 1 or self.suspicious_per_day < 0 or self.remembered < 0:
            raise ConfigError("submission budgets must be positive")
        if not 0.0 < self.near_duplicate_cosine <= 1.0:
            raise ConfigError("the near-duplicate cosine must be in (0, 1]")


DAY_S = 86_400.0
_SKETCH_SEED = 0x16_16


def terms_sketch(terms: Iterable[tuple[str, Any]], side: int = 64) -> Any:
    """A short fixed sample of a submission's terms (``(name, m x m array)`` in a fixed order): from each term the
    entries on ``side`` rows and ``side`` columns fixed by its shape, standardised; unit norm over all terms. The
    same terms give the same sketch, a small change a near one; it costs ``side**2`` reads a term (a full pass
    over a 4096 x 4096 term took 2 s)."""
    import numpy as np

    parts: list[Any] = []
    for _name, term in terms:
        t = np.asarray(term)
        if t.ndim != 2 or t.size == 0:
            continue
        rng = np.random.default_rng([_SKETCH_SEED, *t.shape])
        rows = np.sort(rng.choice(t.shape[0], min(side, t.shape[0]), replace=False))
        cols = np.sort(rng.choice(t.shape[1], min(side, t.shape[1]), replace=False))
        sub = np.asarray(t[np.ix_(rows, cols)], dtype=np.float64).ravel()
        sd = float(sub.std())
        parts.append((sub - sub.mean()) / (sd * math.sqrt(sub.size)) if sd > 0 else np.zeros(sub.size))
    if not parts:
        return np.zeros(0)
    v = np.concatenate(parts)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


@dataclass
class _Budget:
    times: list[float] = field(default_factory=list)  # submissions in the last day
    suspicious: list[float] = field(default_factory=list)
    sketches: list[Any] = field(default_factory=list)  # the last ``remembered`` sketches


class BudgetLedger(Protocol):
    """Where the counted submissions are kept durably (the registry's data directory: ``Registry``)."""

    def budget_events(self, key_id: str, since: float) -> list[tuple[float, bool]]: ...

    def add_budget_event(self, key_id: str, at: float, suspicious: bool, *, forget_before: float) -> None: ...


@dataclass
class SubmissionGuard:
    """Counts each owner key's submissions, and its suspicious ones, over a rolling day (``SubmissionBudget``);
    thread-safe, time injected. With a ``ledger`` the counts are read from and written to it (durable, shared by
    the processes on one data directory); without one they live in this object."""

    budget: SubmissionBudget
    clock: Callable[[], float]
    ledger: BudgetLedger | None = None
    _keys: dict[str, _Budget] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _get(self, key_id: str, now: float) -> _Budget:
        b = self._keys.setdefault(key_id, _Budget())
        if self.ledger is not None:
            events = self.ledger.budget_events(key_id, now - DAY_S)
            b.times = [t for t, _sus in events if now - t < DAY_S]
            b.suspicious = [t for t, sus in events if sus and now - t < DAY_S]
        else:
            b.times = [t for t in b.times if now - t < DAY_S]
            b.suspicious = [t for t in b.suspicious if now - t < DAY_S]
        return b

    def admit(self, key_id: str) -> None:
        """Before a submission's terms are read: refuse a key whose day's submissions are spent (counting
        nothing), or whose suspicious budget is already spent (a key caught probing stops being answered)."""
        now = self.clock()
        with self._lock:
            b = self._get(key_id, now)
            if len(b.times) >= self.budget.submissions_per_day:
                wait = DAY_S - (now - b.times[0])
                raise LimitExceeded(f"submission budget: {self.budget.submissions_per_day} submissions per key per "
                                    f"day; retry in {wait:.0f} s", wait)
            if len(b.suspicious) >= self.budget.suspicious_per_day and self.budget.suspicious_per_day > 0:
                wait = DAY_S - (now - b.suspicious[0])
                raise LimitExceeded(f"submission budget: {self.budget.suspicious_per_day} degenerate or "
                                    f"near-duplicate submissions per key per day; retry in {wait:.0f} s", wait)

    def record(self, key_id: str, sketch: Any, degenerate: bool) -> str | None:
        """After the evidence checks, before comparing: count the submission, and it as suspicious if
        ``degenerate`` or a near-duplicate of one of the key's recent ones. Raises ``LimitExceeded`` (the
        submission is not answered) when a suspicious one exceeds the day's budget; else returns why it was
        counted as suspicious (or None)."""
        import numpy as np

        now = self.clock()
        with self._lock:
            b = self._get(key_id, now)
            why: str | None = "degenerate" if degenerate else None
            if why is None and sketch.size:
                for old in b.sketches:
                    if old.shape == sketch.shape and float(np.dot(old, sketch)) >= self.budget.near_duplicate_cosine:
                        why = "near-duplicate"
                        break
            if why is not None and len(b.suspicious) >= self.budget.suspicious_per_day:
                raise LimitExceeded(f"submission budget: more than {self.budget.suspicious_per_day} degenerate or "
                                    f"near-duplicate submissions from this key in a day (this one: {why})", DAY_S)
            if self.ledger is not None:
                self.ledger.add_budget_event(key_id, now, why is not None, forget_before=now - DAY_S)
            b.times.append(now)
            if why is not None:
                b.suspicious.append(now)
            if self.budget.remembered and sketch.size:
                b.sketches = [*b.sketches[-(self.budget.remembered - 1):], sketch] if self.budget.remembered > 1 \
                    else [sketch]
            if len(self._keys) > 100_000:
                for k in [k for k, v in self._keys.items() if not v.times or now - v.times[-1] > DAY_S]:
                    del self._keys[k]
            return why
