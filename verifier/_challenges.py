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
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from protocol import NONCE_SIZE, Challenge, ProbeSpec, RegistryState, SubmissionLimits
from verifier.errors import ChallengeExpired, ChallengeRejected, InProgress, LimitExceeded, NonceUsed

Clock = Callable[[], float]
Random = Callable[[int], bytes]


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
    ) -> Challenge:
        """A new challenge with a fresh nonce, valid from now for ``ttl_s`` seconds. ``client`` (who asks: a
        certificate or an address) may hold at most ``max_per_client`` unanswered, unexpired challenges, so
        that one client cannot use up the store for everyone."""
        now = self.now()
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
        self._look_up(nonce)
        with self._lock:
            return self._check(nonce).challenge

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
        self._look_up(nonce)
        with self._lock:
            issued = self._check(nonce)
            issued.in_flight = True
            return issued.challenge

    def settle(self, nonce: bytes) -> None:
        """The submission of ``nonce`` is recorded: the nonce is used for ever."""
        with self._lock:
            issued = self._issued.get(nonce)
            if issued is not None:
                issued.used, issued.in_flight = True, False

    def release(self, nonce: bytes) -> None:
        """The submission of ``nonce`` failed after ``redeem``: nothing was recorded, the nonce may be retried."""
        with self._lock:
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
