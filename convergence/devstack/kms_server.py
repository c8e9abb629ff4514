"""A local stand-in for Cloud KMS: `Encrypt` and `Decrypt` of google.cloud.kms.v1.KeyManagementService over
insecure gRPC on loopback, so the real google-cloud-kms client (kms.cloud.CloudKmsCipher) runs in tests and
in the local stack. No KMS emulator exists.

Each crypto key name gets its own random AES-256-GCM key (in memory) on first use, unless `keys` lists the
only names it knows (others: NOT_FOUND). CRC32C fields are checked and answered like the real service.

    python -m convergence.devstack.kms_server --port 9060
"""

from __future__ import annotations

import argparse
import re
import secrets
import threading
from collections.abc import Iterable, Sequence
from concurrent import futures

import google_crc32c
import grpc
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.cloud.kms_v1.types import resources, service

SERVICE = "google.cloud.kms.v1.KeyManagementService"
_KEY_NAME = re.compile(r"projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+")
_VERSION = b"\x01"


def _crc(data: bytes) -> int:
    return int(google_crc32c.value(data))


class KmsStandIn:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, keys: Iterable[str] | None = None):
        self.host = host
        self.port = port
        self._strict = keys is not None
        self._keys: dict[str, AESGCM] = {name: AESGCM(AESGCM.generate_key(256)) for name in keys or ()}
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None
        self.calls: dict[str, int] = {"Encrypt": 0, "Decrypt": 0}

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> KmsStandIn:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="kms-standin"))
        handlers = {
            "Encrypt": grpc.unary_unary_rpc_method_handler(
                self._encrypt, request_deserializer=service.EncryptRequest.deserialize,
                response_serializer=service.EncryptResponse.serialize),
            "Decrypt": grpc.unary_unary_rpc_method_handler(
                self._decrypt, request_deserializer=service.DecryptRequest.deserialize,
                response_serializer=service.DecryptResponse.serialize),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        self.port = server.add_insecure_port(f"{self.host}:{self.port}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=1).wait()
            self._server = None

    def __enter__(self) -> KmsStandIn:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- RPCs --------------------------------------------------------------------------------------------
    def _key(self, name: str, context: grpc.ServicerContext) -> AESGCM:
        if not _KEY_NAME.fullmatch(name):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid crypto key name: {name!r}")
        with self._lock:
            if name not in self._keys:
                if self._strict:
                    context.abort(grpc.StatusCode.NOT_FOUND, f"CryptoKey {name} not found.")
                self._keys[name] = AESGCM(AESGCM.generate_key(256))
            return self._keys[name]

    @staticmethod
    def _check_crc(data: bytes, crc: int | None, what: str, context: grpc.ServicerContext) -> bool:
        if crc is None:
            return False
        if crc != _crc(data):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"The checksum in field {what} did not match the data.")
        return True

    def _encrypt(self, request: service.EncryptRequest, context: grpc.ServicerContext) -> service.EncryptResponse:
        self.calls["Encrypt"] += 1
        key = self._key(request.name, context)
        aad = request.additional_authenticated_data or None
        plain_ok = self._check_crc(request.plaintext, request.plaintext_crc32c, "plaintext_crc32c", context)
        aad_ok = self._check_crc(request.additional_authenticated_data, request.additional_authenticated_data_crc32c,
                                 "additional_authenticated_data_crc32c", context)
        nonce = secrets.token_bytes(12)
        ciphertext = _VERSION + nonce + key.encrypt(nonce, request.plaintext, aad)
        return service.EncryptResponse(
            name=f"{request.name}/cryptoKeyVersions/1", ciphertext=ciphertext, ciphertext_crc32c=_crc(ciphertext),
            verified_plaintext_crc32c=plain_ok, verified_additional_authenticated_data_crc32c=aad_ok,
            protection_level=resources.ProtectionLevel.SOFTWARE)

    def _decrypt(self, request: service.DecryptRequest, context: grpc.ServicerContext) -> service.DecryptResponse:
        self.calls["Decrypt"] += 1
        key = self._key(request.name, context)
        self._check_crc(request.ciphertext, request.ciphertext_crc32c, "ciphertext_crc32c", context)
        data = request.ciphertext
        try:
            if not data.startswith(_VERSION) or len(data) < 29:
                raise InvalidTag
            plaintext = key.decrypt(data[1:13], data[13:], request.additional_authenticated_data or None)
        except InvalidTag:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Decryption failed: the ciphertext is invalid.")
        return service.DecryptResponse(plaintext=plaintext, plaintext_crc32c=_crc(plaintext), used_primary=True,
                                       protection_level=resources.ProtectionLevel.SOFTWARE)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m convergence.devstack.kms_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    server = KmsStandIn(args.host, args.port).start()
    print(f"KMS stand-in listening on {server.endpoint}", flush=True)
    assert server._server is not None
    server._server.wait_for_termination()


if __name__ == "__main__":
    main()
