"""Local keyring: AES-256-GCM with a key file created on first use (mode 600, parent directory created).

For `make run` and tests only; production uses Cloud KMS (convergence/settings/production.py refuses to start without
KMS_KEY_NAME). Ciphertext layout: b"cvk1" | key id (4 bytes of the key's SHA256) | nonce (12) | sealed.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import stat
import threading
from pathlib import Path

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from convergence.kms.errors import CipherError

log = structlog.get_logger(__name__)

_MAGIC = b"cvk1"
_NONCE = 12
_KEY_BYTES = 32


class LocalKeyring:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.key_name = f"local-keyring:{self.path.name}"
        self._aead: AESGCM | None = None
        self._key_id = b""
        self._lock = threading.Lock()

    def encrypt(self, plaintext: bytes, aad: bytes | None = None) -> bytes:
        aead, key_id = self._key()
        nonce = secrets.token_bytes(_NONCE)
        return _MAGIC + key_id + nonce + aead.encrypt(nonce, bytes(plaintext), aad)

    def decrypt(self, ciphertext: bytes, aad: bytes | None = None) -> bytes:
        aead, key_id = self._key()
        header = len(_MAGIC) + len(key_id)
        if len(ciphertext) < header + _NONCE + 16 or not ciphertext.startswith(_MAGIC):
            raise CipherError("not a local-keyring ciphertext")
        if ciphertext[len(_MAGIC):header] != key_id:
            raise CipherError(f"ciphertext was made with another keyring than {self.path}")
        nonce = ciphertext[header:header + _NONCE]
        try:
            return aead.decrypt(nonce, ciphertext[header + _NONCE:], aad)
        except InvalidTag:
            raise CipherError("decryption failed: wrong associated data or corrupted ciphertext") from None

    # -- the key file ------------------------------------------------------------------------------------
    def _key(self) -> tuple[AESGCM, bytes]:
        with self._lock:
            if self._aead is None:
                key = self._read() if self.path.exists() else self._create()
                self._aead = AESGCM(key)
                self._key_id = hashlib.sha256(key).digest()[:4]
            return self._aead, self._key_id

    def _create(self) -> bytes:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = AESGCM.generate_key(bit_length=_KEY_BYTES * 8)
        try:
            # O_EXCL: two processes starting together never both write a key.
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return self._read()
        with os.fdopen(fd, "wb") as handle:
            handle.write(base64.b64encode(key) + b"\n")
        log.info("local keyring created", path=str(self.path))
        return key

    def _read(self) -> bytes:
        mode = stat.S_IMODE(self.path.stat().st_mode)
        if mode & 0o077:
            log.warning("local keyring is readable by others; restricting it to 600", path=str(self.path),
                        mode=oct(mode))
            self.path.chmod(0o600)
        try:
            key = base64.b64decode(self.path.read_bytes().strip(), validate=True)
        except ValueError:
            key = b""
        if len(key) != _KEY_BYTES:
            raise CipherError(f"{self.path} does not hold a base64 256-bit key")
        return key
