"""KMS errors. Messages never include plaintext or key material."""


class CipherError(Exception):
    """Encryption or decryption failed (wrong key, wrong AAD, corrupted data, integrity check)."""
