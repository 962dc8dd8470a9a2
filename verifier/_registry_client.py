"""The registry's log as vendors and auditors reach it, on the verifier's side: ``LocalRegistry`` goes through
``verifier.Registry`` on a data directory (an administrator's or an auditor's copy); over gRPC the same calls
are ``protocol.wire.RemoteRegistry``'s. Both are ``LogSource``s (a ``protocol.LogReader`` that can also
publish and revoke), so the CLI's ``registry`` commands and ``receipt verify`` work either way.

Nothing a log source returns is believed: ``protocol``'s auditor checks (``check_published``, ``prove``,
``check_receipt_entries``, ``audit``) verify signatures and proofs against checkpoints verified with the log's
public key. A corrupt data directory reads as ``protocol.LogUnreadable`` (an audit fails on it); a proof the log
does not have as ``protocol.ProofUnavailable``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from protocol import Bundle, LogReader, LogUnreadable, ProofUnavailable, Published, SignedMessage, TrustStore
from protocol.wire import RegistryClientError
from verifier._registry import Registry
from verifier.errors import OutOfRange, RegistryCorrupt

_T = TypeVar("_T")


class LogSource(LogReader, Protocol):
    """A registry log that can be read, published to and revoked from (remote or local)."""

    def publish(self, statement: SignedMessage, bundle: Bundle) -> Published: ...

    def revoke(self, statement: SignedMessage) -> Published: ...

    def close(self) -> None: ...


class LocalUnreadable(RegistryCorrupt, LogUnreadable):
    """The data directory does not hold what its log says (the registry's own ``RegistryCorrupt``)."""


class LocalOutOfRange(OutOfRange, ProofUnavailable):
    """The local log has no proof for the sizes asked."""


def _read(fn: Callable[[], _T]) -> _T:
    try:
        return fn()
    except RegistryCorrupt as e:
        if isinstance(e, LogUnreadable):
            raise
        raise LocalUnreadable(str(e)) from e
    except OutOfRange as e:
        raise LocalOutOfRange(str(e)) from e


class LocalRegistry:
    """A ``LogSource`` on a data directory; ``trust`` is needed only to publish or revoke."""

    def __init__(self, registry: Registry, trust: TrustStore | None = None) -> None:
        self.registry = registry
        self._trust = trust

    def close(self) -> None:
        self.registry.close()

    def checkpoint(self) -> str:
        return _read(self.registry.latest_checkpoint)

    def entries(self, start: int, end: int) -> list[bytes]:
        out: list[bytes] = []
        while start + len(out) < end:
            page = _read(lambda: self.registry.entries(start + len(out), end))
            if not page:
                break
            out.extend(page)
        return out

    def get(self, key: str) -> tuple[int, bytes]:
        return _read(lambda: self.registry.find(key))

    def inclusion_proof(self, index: int, tree_size: int) -> tuple[bytes, list[bytes]]:
        return _read(lambda: self.registry.inclusion_proof(index, tree_size))

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        return _read(lambda: self.registry.consistency_proof(old_size, new_size))

    def publish(self, statement: SignedMessage, bundle: Bundle) -> Published:
        return self.registry.publish(statement, bundle, self._require_trust())

    def revoke(self, statement: SignedMessage) -> Published:
        return self.registry.revoke(statement, self._require_trust())

    def _require_trust(self) -> TrustStore:
        if self._trust is None:
            raise RegistryClientError("publishing to a local registry needs its trust store (--trust)",
                                      "FAILED_PRECONDITION")
        return self._trust
