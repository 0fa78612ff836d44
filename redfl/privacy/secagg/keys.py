"""Key agreement (X25519), key derivation (HKDF-SHA256) and share encryption (AES-256-GCM).

Every client makes two X25519 key pairs a round: a *cipher* pair, whose agreed secrets
encrypt the shares two clients send each other through the server, and a *mask* pair,
whose agreed secrets seed their pairwise masks. They must differ: when a client drops
after sharing, the server rebuilds its mask private key to remove its masks, and with one
pair that key would also open every share sent to or from the client.

An agreed secret is never used directly: HKDF-SHA256 (RFC 5869) turns it into a 32-byte
key, salted with the round's public seed and labelled with the purpose, the round and the
two clients, so no key serves two purposes, two rounds or two pairs. Shares travel in
AES-256-GCM with a random 96-bit nonce; the associated data binds the sender, the
recipient and the round, so a share moved to another pair or round fails to open.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from redfl.privacy.secagg.errors import ShareAuthenticationError

KEY_BYTES = 32
"""Bytes of an X25519 key, of a derived key and of a mask seed."""

NONCE_BYTES = 12
"""Bytes of an AES-GCM nonce (sent in front of the ciphertext)."""

TAG_BYTES = 16
"""Bytes of an AES-GCM authentication tag (at the end of the ciphertext)."""

_MASK_LABEL = b"redfl secagg pairwise mask seed"
_CIPHER_LABEL = b"redfl secagg share encryption key"
_SHARE_LABEL = b"redfl secagg share"


@dataclass(frozen=True, repr=False)
class KeyPair:
    """An X25519 key pair as raw bytes (picklable; the private half is not printed)."""

    private: bytes
    public: bytes

    @classmethod
    def generate(cls) -> KeyPair:
        """A fresh key pair from the operating system's random source."""
        key = X25519PrivateKey.generate()
        return cls(key.private_bytes_raw(), key.public_key().public_bytes_raw())

    def __repr__(self) -> str:
        return f"KeyPair(public={self.public.hex()})"


def public_key(private: bytes) -> bytes:
    """The public key (raw bytes) of an X25519 private key (raw bytes)."""
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def agree(private: bytes, peers: Sequence[bytes]) -> list[bytes]:
    """The X25519 secrets of our private key with each peer's public key (raw bytes).

    Raises
    ------
    ValueError
        If a key is malformed, or a peer's key is a low-order point.
    """
    key = X25519PrivateKey.from_private_bytes(private)
    return [key.exchange(X25519PublicKey.from_public_bytes(peer)) for peer in peers]


def _derive(secret: bytes, salt: bytes, label: bytes, rnd: int, a: int, b: int) -> bytes:
    """HKDF-SHA256 of ``secret``; the pair ``(a, b)`` is unordered."""
    low, high = min(a, b), max(a, b)
    info = label + struct.pack(">QQQ", rnd, low, high)
    return HKDF(hashes.SHA256(), KEY_BYTES, salt, info).derive(secret)


def mask_seed(secret: bytes, salt: bytes, rnd: int, a: int, b: int) -> bytes:
    """The 32-byte seed of the pairwise mask of clients ``a`` and ``b`` (either order),
    from their agreed mask secret; ``salt`` is the round's public seed."""
    return _derive(secret, salt, _MASK_LABEL, rnd, a, b)


def cipher_key(secret: bytes, salt: bytes, rnd: int, a: int, b: int) -> bytes:
    """The AES-256-GCM key of the shares clients ``a`` and ``b`` send each other, from
    their agreed cipher secret; ``salt`` is the round's public seed."""
    return _derive(secret, salt, _CIPHER_LABEL, rnd, a, b)


def _associated(rnd: int, sender: int, recipient: int) -> bytes:
    return _SHARE_LABEL + struct.pack(">QQQ", rnd, sender, recipient)


def encrypt(key: bytes, plaintext: bytes, rnd: int, sender: int, recipient: int) -> bytes:
    """``nonce || AES-256-GCM(plaintext)``, authenticated with the sender, recipient and round.

    Examples
    --------
    >>> key = bytes(32)
    >>> decrypt(key, encrypt(key, b"share", 3, 1, 2), 3, 1, 2)
    b'share'
    """
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, _associated(rnd, sender, recipient))


def decrypt(key: bytes, message: bytes, rnd: int, sender: int, recipient: int) -> bytes:
    """The plaintext of :func:`encrypt`'s ``message``.

    Raises
    ------
    ShareAuthenticationError
        If the message was altered, or was sealed for another sender, recipient, round or
        key.
    """
    nonce, sealed = message[:NONCE_BYTES], message[NONCE_BYTES:]
    try:
        if len(sealed) < TAG_BYTES:
            raise InvalidTag
        return AESGCM(key).decrypt(nonce, sealed, _associated(rnd, sender, recipient))
    except InvalidTag:
        raise ShareAuthenticationError(
            f"the share from client {sender} to client {recipient} in round {rnd} failed "
            "authentication: it was altered, or sealed for another pair or round"
        ) from None
