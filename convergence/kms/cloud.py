"""Cloud KMS cipher: the real google-cloud-kms client, with Google's recommended CRC32C integrity checks.

`api_endpoint` on a loopback host (the local Encrypt/Decrypt stand-in in convergence/devstack/kms_server.py) is
reached over an insecure gRPC channel; any other endpoint, or none, uses TLS and Application Default
Credentials.
"""

from __future__ import annotations

import ipaddress
import re

import google_crc32c
from google.api_core import exceptions as gexc
from google.cloud import kms_v1

from convergence.kms.errors import CipherError

_KEY_NAME = re.compile(r"projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+")


def _crc(data: bytes) -> int:
    return int(google_crc32c.value(data))


def is_loopback_endpoint(endpoint: str | None) -> bool:
    if not endpoint:
        return False
    host = endpoint.split("://")[-1].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_kms_client(api_endpoint: str | None = None) -> kms_v1.KeyManagementServiceClient:
    if is_loopback_endpoint(api_endpoint):
        import grpc
        from google.cloud.kms_v1.services.key_management_service.transports import KeyManagementServiceGrpcTransport

        assert api_endpoint is not None
        channel = grpc.insecure_channel(api_endpoint.split("://")[-1])
        return kms_v1.KeyManagementServiceClient(transport=KeyManagementServiceGrpcTransport(channel=channel))
    options = {"api_endpoint": api_endpoint} if api_endpoint else None
    return kms_v1.KeyManagementServiceClient(client_options=options)


class CloudKmsCipher:
    def __init__(self, key_name: str, *, api_endpoint: str | None = None,
                 client: kms_v1.KeyManagementServiceClient | None = None, timeout: float = 30.0):
        if not _KEY_NAME.fullmatch(key_name):
            raise ValueError("KMS key name must look like projects/P/locations/L/keyRings/R/cryptoKeys/K")
        self.key_name = key_name
        self.timeout = timeout
        self._client = client or make_kms_client(api_endpoint)

    def encrypt(self, plaintext: bytes, aad: bytes | None = None) -> bytes:
        request = {"name": self.key_name, "plaintext": bytes(plaintext), "plaintext_crc32c": _crc(plaintext)}
        if aad:
            request.update(additional_authenticated_data=aad, additional_authenticated_data_crc32c=_crc(aad))
        response = self._client.encrypt(request=request, timeout=self.timeout)
        aad_verified = not aad or response.verified_additional_authenticated_data_crc32c
        if not response.verified_plaintext_crc32c or not aad_verified:
            raise CipherError("KMS encrypt: the request was corrupted in transit (CRC32C not verified)")
        if response.ciphertext_crc32c != _crc(response.ciphertext):
            raise CipherError("KMS encrypt: the response was corrupted in transit (CRC32C mismatch)")
        return bytes(response.ciphertext)

    def decrypt(self, ciphertext: bytes, aad: bytes | None = None) -> bytes:
        request = {"name": self.key_name, "ciphertext": bytes(ciphertext), "ciphertext_crc32c": _crc(ciphertext)}
        if aad:
            request.update(additional_authenticated_data=aad, additional_authenticated_data_crc32c=_crc(aad))
        try:
            response = self._client.decrypt(request=request, timeout=self.timeout)
        except gexc.InvalidArgument as error:  # wrong key, wrong AAD or corrupted ciphertext
            raise CipherError(f"KMS decrypt refused: {error.message}") from None
        if response.plaintext_crc32c != _crc(response.plaintext):
            raise CipherError("KMS decrypt: the response was corrupted in transit (CRC32C mismatch)")
        return bytes(response.plaintext)
