"""Both KMS paths: the local AES-256-GCM keyring, and the real google-cloud-kms client against the local
gRPC Encrypt/Decrypt stand-in over an insecure channel."""

from __future__ import annotations

import os
import stat

import pytest

from convergence.devstack.kms_server import KmsStandIn
from convergence.kms import Cipher, CipherError, make_cipher
from convergence.kms.cloud import CloudKmsCipher, is_loopback_endpoint
from convergence.kms.local import LocalKeyring
from convergence.settings.model import SettingsError, load_settings

KEY = "projects/convergence-local/locations/global/keyRings/convergence/cryptoKeys/credentials"


@pytest.fixture(scope="module")
def kms_server():
    with KmsStandIn(keys=[KEY]) as server:
        yield server


def test_local_keyring_creates_a_600_key_file_on_first_use(tmp_path):
    path = tmp_path / "state" / "nested" / "keyring.key"
    keyring = LocalKeyring(path)
    assert not path.exists()  # nothing until first use
    sealed = keyring.encrypt(b"sk-live-123", aad=b"acme:OPENAI")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert b"sk-live-123" not in sealed and b"sk-live-123" not in path.read_bytes()
    assert keyring.decrypt(sealed, aad=b"acme:OPENAI") == b"sk-live-123"
    # Another process (a new instance) reads the same key.
    assert LocalKeyring(path).decrypt(sealed, aad=b"acme:OPENAI") == b"sk-live-123"
    assert keyring.encrypt(b"x") != keyring.encrypt(b"x")  # random nonce


def test_local_keyring_refuses_wrong_context_key_or_tampering(tmp_path):
    keyring = LocalKeyring(tmp_path / "a.key")
    sealed = keyring.encrypt(b"secret", aad=b"acme:OPENAI")
    with pytest.raises(CipherError, match="associated data"):
        keyring.decrypt(sealed, aad=b"beta:OPENAI")
    with pytest.raises(CipherError, match="another keyring"):
        LocalKeyring(tmp_path / "b.key").decrypt(sealed, aad=b"acme:OPENAI")
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(CipherError):
        keyring.decrypt(tampered, aad=b"acme:OPENAI")
    (tmp_path / "bad.key").write_bytes(b"short")
    with pytest.raises(CipherError, match="256-bit"):
        LocalKeyring(tmp_path / "bad.key").encrypt(b"x")


def test_local_keyring_tightens_loose_permissions(tmp_path):
    path = tmp_path / "k.key"
    LocalKeyring(path).encrypt(b"x")
    path.chmod(0o644)
    LocalKeyring(path).encrypt(b"x")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_cloud_kms_client_round_trip_through_the_grpc_stand_in(kms_server):
    cipher = CloudKmsCipher(KEY, api_endpoint=kms_server.endpoint)
    assert isinstance(cipher, Cipher)
    before = dict(kms_server.calls)
    sealed = cipher.encrypt(b'{"type": "service_account"}', aad=b"acme:GCP_SA")
    assert b"service_account" not in sealed
    assert cipher.decrypt(sealed, aad=b"acme:GCP_SA") == b'{"type": "service_account"}'
    assert kms_server.calls["Encrypt"] == before["Encrypt"] + 1
    assert kms_server.calls["Decrypt"] == before["Decrypt"] + 1
    with pytest.raises(CipherError, match="refused"):
        cipher.decrypt(sealed, aad=b"beta:GCP_SA")


def test_cloud_kms_unknown_key_and_bad_names(kms_server):
    from google.api_core import exceptions as gexc

    other = CloudKmsCipher(KEY.replace("credentials", "other"), api_endpoint=kms_server.endpoint)
    with pytest.raises(gexc.NotFound):
        other.encrypt(b"x")
    with pytest.raises(ValueError, match="projects/P"):
        CloudKmsCipher("my-key", api_endpoint=kms_server.endpoint)


def test_make_cipher_picks_the_path_from_settings(tmp_path, kms_server):
    local = make_cipher(load_settings(local_keyring_path=tmp_path / "k.key"))
    assert isinstance(local, LocalKeyring)
    cloud = make_cipher(load_settings(kms_key_name=KEY, kms_endpoint=kms_server.endpoint))
    assert isinstance(cloud, CloudKmsCipher)
    assert cloud.decrypt(cloud.encrypt(b"v")) == b"v"
    with pytest.raises(SettingsError, match="KMS_KEY_NAME"):
        make_cipher(load_settings(environment="production"))


def test_loopback_detection():
    assert is_loopback_endpoint("127.0.0.1:9060") and is_loopback_endpoint("localhost:1")
    assert is_loopback_endpoint("[::1]:9060")
    assert not is_loopback_endpoint("cloudkms.googleapis.com") and not is_loopback_endpoint(None)
