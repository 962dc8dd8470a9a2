"""The challenge store: fresh nonces, each redeemable once, before its expiry, and only here.

A nonce is 32 random bytes; the store remembers every challenge it issued until it expires (and a while
after, so that a late replay is still reported as a replay). ``peek`` checks a nonce without using it (the
header check); ``redeem`` uses it, atomically, once every check of the submission has passed, so a rejected
submission leaves its nonce as it was and two streams racing with one nonce cannot both be accepted.

Time and randomness are injected. The store is in memory: a restarted verifier forgets its challenges and
owners ask again (a challenge is cheap). It never persists anything.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from protocol import NONCE_SIZE, Challenge, ProbeSpec, RegistryState, SubmissionLimits
from verifier.errors import ChallengeExpired, ChallengeRejected, LimitExceeded

Clock = Callable[[], float]
Random = Callable[[int], bytes]


@dataclass
class _Issued:
    challenge: Challenge
    used: bool = False


class ChallengeStore:
    """Issues challenges and redeems their nonces; thread-safe."""

    def __init__(
        self,
        *,
        ttl_s: int = 900,
        clock: Clock = time.time,
        rng: Random = secrets.token_bytes,
        max_outstanding: int = 100_000,
    ) -> None:
        if ttl_s < 1:
            raise ValueError("a challenge must live at least one second")
        self._ttl = int(ttl_s)
        self._clock = clock
        self._rng = rng
        self._max = max_outstanding
        self._issued: dict[bytes, _Issued] = {}
        self._lock = threading.Lock()

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
    ) -> Challenge:
        """A new challenge with a fresh nonce, valid from now for ``ttl_s`` seconds."""
        now = self.now()
        with self._lock:
            self._forget_expired(now)
            if len(self._issued) >= self._max:
                raise LimitExceeded("too many outstanding challenges; try again later")
            nonce = self._rng(NONCE_SIZE)
            if len(nonce) != NONCE_SIZE or nonce in self._issued:
                # A repeated 32-byte random value means the random source is broken: refuse to go on.
                raise RuntimeError("the nonce source returned a repeated or short value")
            challenge = Challenge(
                verifier_key_id=verifier_key_id, nonce=nonce, issued_at=now, expires_at=now + self._ttl,
                probe_sets=probe_sets, layers=layers, method=method, limits=limits, registry=registry,
            )
            self._issued[nonce] = _Issued(challenge)
            return challenge

    def peek(self, nonce: bytes | None) -> Challenge:
        """The challenge of ``nonce`` if it is issued here, unused and unexpired; the nonce stays unused."""
        with self._lock:
            return self._check(nonce).challenge

    def redeem(self, nonce: bytes | None) -> Challenge:
        """Like ``peek``, and marks the nonce used (atomically: one redemption per nonce, ever)."""
        with self._lock:
            issued = self._check(nonce)
            issued.used = True
            return issued.challenge

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
            raise ChallengeRejected("the nonce was already used: ask for a new challenge")
        if self.now() >= issued.challenge.expires_at:
            raise ChallengeExpired("the challenge has expired: ask for a new one")
        return issued

    def _forget_expired(self, now: int) -> None:
        # Keep expired entries one more TTL, so that a late replay is reported as such rather than unknown.
        horizon = now - self._ttl
        for nonce in [n for n, i in self._issued.items() if i.challenge.expires_at <= horizon]:
            del self._issued[nonce]
