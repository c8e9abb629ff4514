"""Encryption of credentials and org API keys: Cloud KMS in production, a local AES-256-GCM keyring for
the embedded stack. Both sit behind `Cipher`; `make_cipher(settings)` picks one from settings."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from convergence.kms.errors import CipherError
from convergence.settings import Settings, SettingsError


@runtime_checkable
class Cipher(Protocol):
    """Symmetric encryption with optional additional authenticated data (AAD).

    The AAD is not stored: decrypt needs the same AAD that encrypt was given, which binds a ciphertext to
    its context (e.g. `org:provider`), so a row copied to another org does not decrypt."""

    key_name: str

    def encrypt(self, plaintext: bytes, aad: bytes | None = None) -> bytes: ...

    def decrypt(self, ciphertext: bytes, aad: bytes | None = None) -> bytes: ...


def make_cipher(settings: Settings) -> Cipher:
    if settings.kms_key_name:
        from convergence.kms.cloud import CloudKmsCipher

        return CloudKmsCipher(settings.kms_key_name, api_endpoint=settings.kms_endpoint)
    if settings.is_production:
        raise SettingsError("KMS_KEY_NAME is required in production: the local keyring is for development only")
    from convergence.kms.local import LocalKeyring

    return LocalKeyring(settings.local_keyring_path)


__all__ = ["Cipher", "CipherError", "make_cipher"]
