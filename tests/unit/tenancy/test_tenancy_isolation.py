"""Two orgs on the emulator: a query for org A never returns org B's credentials or rows; hostile slugs and
names are refused before BigQuery; credentials round-trip through both KMS paths and the plaintext never
appears in logs, errors or the table."""

from __future__ import annotations

import base64
import logging
from datetime import date

import pytest
import structlog

from convergence.devstack.kms_server import KmsStandIn
from convergence.kms.cloud import CloudKmsCipher
from convergence.kms.local import LocalKeyring
from convergence.tenancy.credentials import CredentialDecryptError, CredentialNotFound, CredentialStore
from convergence.tenancy.gate import OrgGate
from convergence.tenancy.onboarding import onboard_org
from convergence.warehouse.bootstrap import bootstrap
from convergence.warehouse.client import make_client
from convergence.warehouse.identifiers import InvalidIdentifier
from convergence.warehouse.writer import Writer
from tests.support.warehouse import ExplodingClient, emulator_settings, unique

pytestmark = pytest.mark.emulator

KEY = "projects/convergence-local/locations/global/keyRings/convergence/cryptoKeys/credentials"


@pytest.fixture(scope="module")
def kms_server():
    with KmsStandIn() as server:
        yield server


@pytest.fixture(scope="module")
def env(local_stack, tmp_path_factory):
    settings = emulator_settings(local_stack, local_keyring_path=tmp_path_factory.mktemp("keys") / "keyring.key")
    client = make_client(settings)
    assert bootstrap(client, settings).ok
    return settings, client


@pytest.fixture(params=["local_keyring", "cloud_kms"])
def cipher(request, env, kms_server):
    settings, _ = env
    if request.param == "local_keyring":
        return LocalKeyring(settings.local_keyring_path)
    return CloudKmsCipher(KEY, api_endpoint=kms_server.endpoint)


def test_credentials_round_trip_and_never_leak(env, cipher, capfd, caplog):
    settings, client = env
    caplog.set_level(logging.DEBUG)
    store = CredentialStore(client, settings, cipher)
    a, b = unique("orga"), unique("orgb")
    secret_a, secret_b = f"sk-{unique('secretA')}", f"sk-{unique('secretB')}"
    with structlog.testing.capture_logs() as events:
        store.put(a, "OPENAI", secret_a, credential_name="prod key")
        store.put(b, "OPENAI", secret_b)
        assert store.get(a, "OPENAI") == secret_a
        assert store.get(b, "openai") == secret_b
        store.put(a, "OPENAI", secret_a + "-rotated")
        assert store.get(a, "OPENAI") == secret_a + "-rotated"
        with pytest.raises(CredentialNotFound):
            store.get(a, "ANTHROPIC")
        assert [p["provider"] for p in store.providers(a)] == ["OPENAI"]
    assert events, "the store logs what it does (without values)"
    out, err = capfd.readouterr()
    logged = "\n".join([repr(events), out, err, caplog.text])
    for secret in (secret_a, secret_b):
        assert secret not in logged
    # At rest: only ciphertext, one active row per org and provider.
    table = f"{client.project}.{settings.central_dataset}.org_integration_credentials"
    stored = [dict(r) for r in client.query(f"SELECT org_slug, encrypted_credential, kms_key_name FROM `{table}` "
                                            f"WHERE org_slug IN ('{a}', '{b}')").result()]
    assert len(stored) == 2 and {r["kms_key_name"] for r in stored} == {cipher.key_name}
    for row in stored:
        raw = base64.b64decode(row["encrypted_credential"])
        assert secret_a.encode() not in raw and secret_b.encode() not in raw


def test_a_copied_ciphertext_does_not_decrypt_for_another_org(env, cipher):
    settings, client = env
    store = CredentialStore(client, settings, cipher)
    a, b = unique("orga"), unique("orgb")
    store.put(a, "GCP_SA", '{"private_key": "-----BEGIN KEY-----"}')
    store.put(b, "GCP_SA", "placeholder")
    table = f"{client.project}.{settings.central_dataset}.org_integration_credentials"
    # An attacker (or a bug) copies org A's ciphertext into org B's row.
    client.query(f"UPDATE `{table}` SET encrypted_credential = (SELECT encrypted_credential FROM `{table}` "
                 f"WHERE org_slug = '{a}') WHERE org_slug = '{b}'").result()
    with pytest.raises(CredentialDecryptError) as caught:
        store.get(b, "GCP_SA")
    assert "BEGIN KEY" not in str(caught.value)


def test_org_a_never_reads_org_b(env, cipher):
    settings, client = env
    a, b = unique("orga"), unique("orgb")
    for org in (a, b):
        onboard_org(client, settings, cipher, org, "STARTER")
    store = CredentialStore(client, settings, cipher)
    store.put(b, "ANTHROPIC", "sk-ant-b")
    with pytest.raises(CredentialNotFound):
        store.get(a, "ANTHROPIC")
    # Rows: org A's writer cannot target org B's dataset, and B's rows in a shared table stay B's.
    writer = Writer(client, settings)
    row = {"org_slug": a, "cost_date": date(2024, 3, 1), "resource_type": "API_CALLS", "cost_tracking_id": "x",
           "created_at": "2024-03-01T00:00:00Z"}
    from convergence.pipeline.errors import PermanentStepError

    with pytest.raises(PermanentStepError) as caught:
        writer.write(settings.org_dataset(b), "cost", [row], org_slug=a)
    assert caught.value.code == "DATASET_NOT_OWNED"
    with pytest.raises(PermanentStepError) as caught:
        writer.write(settings.central_dataset, "org_cost_tracking", [{**row, "org_slug": b}], org_slug=a)
    assert caught.value.code == "ORG_MISMATCH"
    # The gate answers for the org asked about only.
    assert OrgGate(client, settings).check(a).org_slug == a


@pytest.mark.parametrize("hostile", ["acme' OR '1'='1", "acme`", "a..b", "x" * 200, "Acme", "acme;--"])
def test_hostile_org_slug_is_refused_before_bigquery(hostile, tmp_path):
    from convergence.settings.model import load_settings

    settings = load_settings(local_keyring_path=tmp_path / "k.key")
    store = CredentialStore(ExplodingClient(), settings, LocalKeyring(settings.local_keyring_path))  # type: ignore[arg-type]
    with pytest.raises(InvalidIdentifier):
        store.get(hostile, "OPENAI")
    with pytest.raises(InvalidIdentifier):
        store.put(hostile, "OPENAI", "sk-x")
    with pytest.raises(InvalidIdentifier):
        store.get("acme", "OPENAI' OR '1'='1")
    decision = OrgGate(ExplodingClient(), settings).check(hostile)  # type: ignore[arg-type]
    assert (decision.allowed, decision.code) == (False, "INVALID_ORG_SLUG")
