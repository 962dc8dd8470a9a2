"""The error hierarchy of ``protocol``: every failure this package reports on bad input is one of these.

Messages are meant for the operator at the edge (CLI, logs). Toward an untrusted caller the gRPC layer maps
each class to a status and, for signatures, says no more than ``SignatureError`` does: which check failed
would help a forger.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class of every error ``protocol`` raises on bad input."""


class CanonicalError(ProtocolError):
    """A value cannot be encoded canonically, or bytes are not the canonical encoding of a value."""


class FormatError(ProtocolError):
    """A field is well encoded but malformed: a hex digest of the wrong length, an unknown key id format."""


class UnknownKindError(ProtocolError):
    """A domain-separation kind outside the closed set: a bug in the calling code, never a peer's input."""


class KeyFileError(ProtocolError):
    """A key file is missing, unreadable, not Ed25519, or its passphrase is missing or wrong."""


class SignatureError(ProtocolError):
    """A signature does not verify. Deliberately says nothing about why."""


class TrustStoreError(ProtocolError):
    """A trust store file is malformed, or an edit of the store is inconsistent."""


class UntrustedKeyError(ProtocolError):
    """A key is unknown to the trust store, revoked, or not trusted for the role asked for."""


class MerkleError(ProtocolError):
    """A Merkle tree operation was asked for something out of range (index, tree size)."""


class ProofError(MerkleError):
    """An inclusion or consistency proof does not verify, or is malformed."""


class CommitmentError(ProtocolError):
    """The entries of a weight commitment are malformed (duplicate names, bad digest, bad shape)."""
