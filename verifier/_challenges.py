"""The challenge store: fresh nonces, each redeemable once, before its expiry, and only here.

A nonce is 32 random bytes; the store remembers every challenge it issued until it expires (and a while
after, so that a late replay is still reported as a replay). ``peek`` checks a nonce without using it (the
header check); ``redeem`` uses it, atomically, once every check of the submission has passed, so a rejected
submission leaves its nonce as it was and two streams racing with one nonce cannot both be accepted.

A redeemed nonce is *in flight* until the submission is recorded (``settle``: used for ever) or fails
(``release``: usable again, so a retry of the same signed manifest can still succeed). Two streams with
one nonce cannot both be in flight.

Time and randomness are injected. The store is in memory; ``persist`` (the registry's challenge table) is
called with each challenge before it is handed out and ``restore`` loads them again at start-up, so that a
verifier killed mid-submission still knows the nonce its owner will retry with; ``lookup`` asks the same table
for a nonce the store does not know, so that several verifier processes serving one data directory honour each
other's challenges (the table's join with the submissions says whether a nonce was used; the submissions
table's unique nonce makes a receipt once per nonce across processes).

**Stateless challenges** (``mac``: a ``ChallengeMac`` over the data directory, what the verifier serves with):
issuing stores nothing and holds nothing. The nonce says when it was issued, which *template* it answers
(everything a challenge says besides its nonce and times: verifier key, probe sets, layers, method, limits,
registry state and lifetime) and carries random bits, all under an HMAC-SHA256 tag with a key kept in the data
directory, so the challenge is rebuilt from the nonce alone, by this process after a restart or by any other
process serving the same directory. A template is written once per registry change (a few hundred bytes to a
few megabytes, not one row per challenge); the key is created atomically by whichever process comes first.
A challenge is persisted only when answered: its receipt row (the submissions table's unique nonce) is what
makes it used, asked through ``answered``; a nonce in flight is held in memory until it settles or is
released, as before. A flood of challenges from one address therefore costs the server only the signing
and locks out nobody. A nonce whose tag does not verify is looked up as a stored challenge (those issued
before stateless challenges) and otherwise refused as unknown.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from protocol import (
    NONCE_SIZE,
    Challenge,
    ProbeSpec,
    ProtocolError,
    RegistryState,
    SubmissionLimits,
    decode_map,
    encode,
)
from verifier.errors import (
    ChallengeExpired,
    ChallengeRejected,
    ConfigError,
    InProgress,
    LimitExceeded,
    NonceUsed,
)

Clock = Callable[[], float]
Random = Callable[[int], bytes]


# A stateless nonce: issued_at (5 bytes, big-endian seconds) | template id (6) | random (8) | tag (13).
_TIME, _TEMPLATE, _RANDOM = 5, 6, 8
_HEAD = _TIME + _TEMPLATE + _RANDOM
_TAG = NONCE_SIZE - _HEAD
_DOMAIN = b"pawprint-challenge-mac/1\0"
MAC_KEY_FILE = "challenge-mac.key"
TEMPLATE_DIR = "challenge-templates"


class ChallengeMac:
    """The HMAC key and the challenge templates of stateless challenges, kept in ``directory`` (the verifier's
    data directory): the key file (32 random bytes, mode 0600) is created atomically by the first process,
    every other process reads it; a template file is named by the first bytes of its SHA-256 and never
    rewritten."""

    def __init__(self, directory: Path | str, verifier_key_id: str | None = None) -> None:
        directory = Path(directory)
        self._verifier_key_id = verifier_key_id  # templates naming another verifier key are not ours
        self._key = _mac_key(directory / MAC_KEY_FILE)
        self._dir = directory / TEMPLATE_DIR
        self._dir.mkdir(exist_ok=True)
        self._lock = threading.Lock()
        self._templates: dict[bytes, tuple[bytes, Challenge]] = {}  # id -> (digest, template)
        self._ids: dict[bytes, bytes] = {}  # encoded template -> id

    def template_id(self, template: Challenge) -> tuple[bytes, bytes]:
        """(id, digest) of ``template``, written to the template directory if it is new."""
        data = encode(template.to_map())
        with self._lock:
            tid = self._ids.get(data)
        if tid is not None:
            return tid, self._templates[tid][0]
        digest = hashlib.sha256(data).digest()
        tid = digest[:_TEMPLATE]
        path = self._dir / tid.hex()
        try:
            _create_once(path, data, 0o644)
        except FileExistsError:
            if path.read_bytes() != data:
                raise RuntimeError(f"{path}: another challenge template has the same id") from None
        with self._lock:
            if len(self._ids) > 64:  # templates change with the registry: keep the recent ones
                self._ids.clear()
            self._ids[data] = tid
            self._templates[tid] = (digest, template)
        return tid, digest

    def template(self, tid: bytes) -> tuple[bytes, Challenge] | None:
        """(digest, template) of the template ``tid``, from memory or its file; None if there is none."""
        with self._lock:
            found = self._templates.get(tid)
        if found is not None:
            return found
        try:
            data = (self._dir / tid.hex()).read_bytes()
        except FileNotFoundError:
            return None
        try:
            template = Challenge.from_map(decode_map(data))
        except ProtocolError:
            return None
        found = (hashlib.sha256(data).digest(), template)
        if found[0][:_TEMPLATE] != tid or self._verifier_key_id not in (None, template.verifier_key_id):
            return None
        with self._lock:
            self._templates[tid] = found
        return found

    def tag(self, head: bytes, digest: bytes) -> bytes:
        return hmac.new(self._key, _DOMAIN + head + digest, hashlib.sha256).digest()[:_TAG]


def _create_once(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a temporary file, fsync it and hard-link it to ``path``: whole or absent, and never
    replacing a file already there (``FileExistsError``), so the first of several processes wins. (File
    descriptors only, no buffered file object: small files, and nothing between the bytes and the disk.)"""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _mac_key(path: Path) -> bytes:
    try:
        _create_once(path, secrets.token_bytes(32), 0o600)
    except FileExistsError:
        pass  # another process (or an earlier run) made it: use that one
    except OSError as e:
        raise ConfigError(f"cannot create {path}: {e.strerror or e}") from e
    try:
        key = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from e
    if len(key) != 32:
        raise ConfigError(f"{path} is not a challenge key (32 bytes); remove it to make a new one, which "
                          "invalidates every unanswered challenge")
    if os.name == "posix" and path.stat().st_mode & 0o077:
        raise ConfigError(f"{path} is readable by others: chmod 600 it")
    return key


@dataclass
class _Issued:
    challenge: Challenge
    used: bool = False
    in_flight: bool = False


class ChallengeStore:
    """Issues challenges and redeems their nonces; thread-safe."""

    def __init__(
        self,
        *,
        ttl_s: int = 900,
        clock: Clock = time.time,
        rng: Random = secrets.token_bytes,
        max_outstanding: int = 100_000,
        max_per_client: int = 1_000,
        persist: Callable[[Challenge], None] | None = None,
        lookup: Callable[[bytes], tuple[Challenge, bool] | None] | None = None,
        mac: ChallengeMac | None = None,
        answered: Callable[[bytes], bool] | None = None,
    ) -> None:
        if ttl_s < 1:
            raise ValueError("a challenge must live at least one second")
        self._ttl = int(ttl_s)
        self._clock = clock
        self._rng = rng
        self._max = max_outstanding
        self._max_per_client = max_per_client
        self._by_client: dict[str, set[bytes]] = {}
        self._issued: dict[bytes, _Issued] = {}
        self._lock = threading.Lock()
        self._persist = persist
        self._lookup = lookup
        self._mac = mac
        self._answered = answered
        self._in_flight: set[bytes] = set()  # stateless nonces redeemed and not yet settled or released
        self._used: dict[bytes, int] = {}  # stateless nonces settled here -> expires_at

    def now(self) -> int:
        return int(self._clock())

    def issue(
        self,
        *,
        verifier_key_id: str,
        probe_sets: tuple[ProbeSpec, ...],
        layers: str,
        method: str,
        limits: SubmissionLimits,
        registry: RegistryState,
        client: str | None = None,
        sketch: int = 0,
    ) -> Challenge:
        """A new challenge with a fresh nonce, valid from now for ``ttl_s`` seconds. ``client`` (who asks: a
        certificate or an address) may hold at most ``max_per_client`` unanswered, unexpired challenges, so
        that one client cannot use up the store for everyone."""
        now = self.now()
        if self._mac is not None:
            template = Challenge(
                verifier_key_id=verifier_key_id, nonce=bytes(NONCE_SIZE), issued_at=0, expires_at=self._ttl,
                probe_sets=probe_sets, layers=layers, method=method, limits=limits, registry=registry,
                sketch=sketch,
            )
            tid, digest = self._mac.template_id(template)
            random = self._rng(NONCE_SIZE)[:_RANDOM]
            if len(random) != _RANDOM:
                raise RuntimeError("the nonce source returned a short value")
            head = now.to_bytes(_TIME, "big") + tid + random
            return replace(template, nonce=head + self._mac.tag(head, digest), issued_at=now,
                           expires_at=now + self._ttl)
        with self._lock:
            self._forget_expired(now)
            if len(self._issued) >= self._max:
                raise LimitExceeded("too many outstanding challenges; try again later")
            held: set[bytes] | None = None
            if client is not None:
                held = self._by_client.setdefault(client, set())
                for n in [n for n in held if (i := self._issued.get(n)) is None or i.used
                          or i.challenge.expires_at <= now]:
                    held.discard(n)
                if len(held) >= self._max_per_client:
                    raise LimitExceeded(f"this client holds {len(held)} unanswered challenges; answer them or let "
                                        "them expire")
            nonce = self._rng(NONCE_SIZE)
            if len(nonce) != NONCE_SIZE or nonce in self._issued:
                # A repeated 32-byte random value means the random source is broken: refuse to go on.
                raise RuntimeError("the nonce source returned a repeated or short value")
            challenge = Challenge(
                verifier_key_id=verifier_key_id, nonce=nonce, issued_at=now, expires_at=now + self._ttl,
                probe_sets=probe_sets, layers=layers, method=method, limits=limits, registry=registry,
                sketch=sketch,
            )
            if self._persist is not None:
                self._persist(challenge)  # before anyone can answer it: a restart must still know it
            self._issued[nonce] = _Issued(challenge)
            if held is not None:
                held.add(nonce)
            return challenge

    def restore(self, challenges: list[tuple[Challenge, bool]]) -> int:
        """Load challenges issued before a restart, each with whether its nonce was used; expired ones beyond
        the replay horizon are dropped. Returns how many were loaded."""
        now = self.now()
        with self._lock:
            for challenge, used in challenges:
                if challenge.expires_at > now - self._ttl:
                    self._issued[challenge.nonce] = _Issued(challenge, used=used)
            return len(self._issued)

    def peek(self, nonce: bytes | None) -> Challenge:
        """The challenge of ``nonce`` if it is issued here, unused and unexpired; the nonce stays unused."""
        stateless = self._stateless(nonce)
        if stateless is not None:
            with self._lock:
                return self._check_stateless(stateless)
        self._look_up(nonce)
        with self._lock:
            return self._check(nonce).challenge

    def _stateless(self, nonce: bytes | None) -> Challenge | None:
        """The challenge a stateless ``nonce`` names, if its tag verifies (used or not, expired or not)."""
        if self._mac is None or not isinstance(nonce, bytes) or len(nonce) != NONCE_SIZE:
            return None
        found = self._mac.template(nonce[_TIME:_TIME + _TEMPLATE])
        if found is None:
            return None
        digest, template = found
        if not hmac.compare_digest(self._mac.tag(nonce[:_HEAD], digest), nonce[_HEAD:]):
            return None
        issued_at = int.from_bytes(nonce[:_TIME], "big")
        challenge = replace(template, nonce=nonce, issued_at=issued_at,
                            expires_at=issued_at + template.expires_at - template.issued_at)
        if nonce not in self._used and self._answered is not None and self._answered(nonce):
            with self._lock:
                self._used[nonce] = challenge.expires_at
        return challenge

    def _check_stateless(self, challenge: Challenge) -> Challenge:
        if challenge.nonce in self._used:
            raise NonceUsed("the nonce was already used: ask for a new challenge")
        if challenge.nonce in self._in_flight:
            raise InProgress("a submission answering this challenge is in progress")
        if self.now() >= challenge.expires_at:
            raise ChallengeExpired("the challenge has expired: ask for a new one")
        return challenge

    def _look_up(self, nonce: bytes | None) -> None:
        """Another process serving the same data directory may have issued this nonce, or used it: unless
        this store already knows it used, ``lookup`` (the registry's challenge table) is asked, outside the
        lock, and what it knows is taken in."""
        if self._lookup is None or not isinstance(nonce, bytes) or len(nonce) != NONCE_SIZE:
            return
        with self._lock:
            known = self._issued.get(nonce)
            if known is not None and known.used:
                return
        found = self._lookup(nonce)
        if found is None:
            return
        challenge, used = found
        with self._lock:
            known = self._issued.get(nonce)
            if known is None and challenge.expires_at > self.now() - self._ttl:
                self._issued[nonce] = _Issued(challenge, used=used)
            elif known is not None and used:
                known.used = True

    def redeem(self, nonce: bytes | None) -> Challenge:
        """Like ``peek``, and marks the nonce in flight (atomically: one submission per nonce at a time);
        ``settle`` or ``release`` it afterwards."""
        stateless = self._stateless(nonce)
        if stateless is not None:
            with self._lock:
                self._check_stateless(stateless)
                self._in_flight.add(stateless.nonce)
                return stateless
        self._look_up(nonce)
        with self._lock:
            issued = self._check(nonce)
            issued.in_flight = True
            return issued.challenge

    def settle(self, nonce: bytes) -> None:
        """The submission of ``nonce`` is recorded: the nonce is used for ever."""
        with self._lock:
            if nonce in self._in_flight:
                self._in_flight.discard(nonce)
                horizon = self.now() - self._ttl
                for n in [n for n, expires in self._used.items() if expires <= horizon]:
                    del self._used[n]  # the receipt row still says it was used
                self._used[nonce] = int.from_bytes(nonce[:_TIME], "big") + self._ttl
            issued = self._issued.get(nonce)
            if issued is not None:
                issued.used, issued.in_flight = True, False

    def release(self, nonce: bytes) -> None:
        """The submission of ``nonce`` failed after ``redeem``: nothing was recorded, the nonce may be retried."""
        with self._lock:
            self._in_flight.discard(nonce)
            issued = self._issued.get(nonce)
            if issued is not None and not issued.used:
                issued.in_flight = False

    def check_live(self, challenge: Challenge) -> None:
        """``ChallengeExpired`` once ``challenge`` has expired (checked while a stream is in progress)."""
        if self.now() >= challenge.expires_at:
            raise ChallengeExpired("the challenge expired during the submission")

    def __len__(self) -> int:
        with self._lock:
            return len(self._issued)

    def _check(self, nonce: bytes | None) -> _Issued:
        issued = self._issued.get(nonce) if isinstance(nonce, bytes) else None
        if issued is None:
            raise ChallengeRejected("unknown nonce: this verifier did not issue it (or it expired long ago)")
        if issued.used:
            raise NonceUsed("the nonce was already used: ask for a new challenge")
        if issued.in_flight:
            raise InProgress("a submission answering this challenge is in progress")
        if self.now() >= issued.challenge.expires_at:
            raise ChallengeExpired("the challenge has expired: ask for a new one")
        return issued

    def _forget_expired(self, now: int) -> None:
        # Keep expired entries one more TTL, so that a late replay is reported as such rather than unknown.
        horizon = now - self._ttl
        for nonce in [n for n, i in self._issued.items() if i.challenge.expires_at <= horizon]:
            del self._issued[nonce]
        for client, held in list(self._by_client.items()):
            held.intersection_update(self._issued)
            if not held:
                del self._by_client[client]
