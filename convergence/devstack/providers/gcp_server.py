"""Stand-in for Google's OAuth2 token endpoint and the Cloud Billing and Compute REST APIs.

- `POST /token`: the service-account JWT-bearer grant (RFC 7523) exactly as google-auth sends it
  (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<RS256 JWT>`). The assertion is
  verified with the public key of a registered service-account key (signature, `iss`, `aud` = this
  token URI or Google's, `exp`); the answer is `{"access_token", "expires_in", "token_type": "Bearer"}`.
- `GET /v1/billingAccounts` (cloudbilling): `pageSize`, `pageToken` -> `{"billingAccounts": [...],
  "nextPageToken": "..."}` (empty on the last page, as Google does).
- `GET /v1/billingAccounts/{id}` (cloudbilling billingAccounts.get): one BillingAccount (`name`, `open`,
  `displayName`, `masterBillingAccount`, `parent`, `currencyCode`); 403 PERMISSION_DENIED when the caller's
  service account is not a viewer of the account (`account_viewers`), 404 NOT_FOUND for an unknown id,
  400 INVALID_ARGUMENT for a malformed one. Each call is recorded in `account_gets`.
- `GET /compute/v1/projects/{project}/aggregated/instances` (compute): `maxResults`, `pageToken` ->
  `{"items": {"zones/<zone>": {"instances": [...]} | {"warning": ...}}, "nextPageToken"}`.

API calls need `Authorization: Bearer <token issued here>` carrying the API's scope. Tests build keys
with `make_service_account_key()` (a fresh RSA key; its `token_uri` points at this server).
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import exceptions as auth_exceptions
from google.auth import jwt

from convergence.devstack.providers.common import LoopbackServer

SCOPE_BILLING = ("https://www.googleapis.com/auth/cloud-billing.readonly",
                 "https://www.googleapis.com/auth/cloud-billing", "https://www.googleapis.com/auth/cloud-platform")
SCOPE_COMPUTE = ("https://www.googleapis.com/auth/compute.readonly", "https://www.googleapis.com/auth/compute",
                 "https://www.googleapis.com/auth/cloud-platform")
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# google-auth signs service-account assertions for this audience whatever the key's token_uri says.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL, not a secret


def make_service_account_key(project_id: str, token_uri: str, name: str = "convergence-reader") -> dict[str, Any]:
    """A service-account key file's JSON, as the console downloads it, with a new 2048-bit RSA key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return {
        "type": "service_account", "project_id": project_id, "private_key_id": secrets.token_hex(20),
        "private_key": pem, "client_email": f"{name}@{project_id}.iam.gserviceaccount.com",
        "client_id": str(secrets.randbelow(10**20)), "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri, "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{name}%40{project_id}.iam.gserviceaccount.com",
        "universe_domain": "googleapis.com",
    }


def billing_account(index: int) -> dict[str, Any]:
    return {"name": f"billingAccounts/{index:06X}-{index * 7 % 0xFFFFFF:06X}-ABCDEF",
            "open": index % 5 != 0, "displayName": f"Billing account {index}",
            "masterBillingAccount": "" if index % 3 else "billingAccounts/000000-000000-000000",
            "parent": "organizations/123456789"}


def instance(project: str, zone: str, index: int) -> dict[str, Any]:
    return {"kind": "compute#instance", "id": str(10**15 + index), "name": f"vm-{zone}-{index}",
            "zone": f"https://www.googleapis.com/compute/v1/projects/{project}/zones/{zone}",
            "machineType": f"zones/{zone}/machineTypes/e2-standard-{2 ** (index % 3 + 1)}",
            "status": "RUNNING" if index % 4 else "TERMINATED", "labels": {"team": f"t{index % 3}"},
            "creationTimestamp": "2025-01-01T00:00:00.000-08:00"}


# Billing account ids as Google writes them: three groups of six upper-case hex digits.
ACCOUNT_ID = re.compile(r"^[0-9A-F]{6}-[0-9A-F]{6}-[0-9A-F]{6}$")


def account_resource(account_id: str, display_name: str, *, open_: bool = True, master: str = "",
                     parent: str = "organizations/123456789", currency: str = "USD") -> dict[str, Any]:
    """A BillingAccount as billingAccounts.get answers it (JSON field names of the REST resource)."""
    return {"name": f"billingAccounts/{account_id}", "open": open_, "displayName": display_name,
            "masterBillingAccount": master, "parent": parent, "currencyCode": currency}


@dataclass
class AccountGet:
    account_id: str
    client_email: str | None  # the service account whose token called; None for an unknown token
    status: int


@dataclass
class Issued:
    client_email: str
    scopes: frozenset[str]
    expires_at: float


@dataclass
class GcpStandIn(LoopbackServer):
    billing_accounts: int = 7
    zones: dict[str, int] = field(default_factory=lambda: {"us-central1-a": 5, "europe-west1-b": 0,
                                                            "asia-east1-a": 3})
    token_lifetime: int = 3600
    # billingAccounts.get: account id -> resource (account_resource()); the listed accounts are gettable too.
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    # account id -> the service accounts (client_email) that may view it; an account not here: any caller.
    account_viewers: dict[str, set[str]] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = 0

    def __post_init__(self) -> None:
        super().__init__(self.host, self.port)
        self.keys: dict[str, Any] = {}  # client_email -> public key
        self.tokens: dict[str, Issued] = {}
        self.token_requests = 0
        self.api_calls: list[tuple[str, dict[str, str]]] = []
        self.account_gets: list[AccountGet] = []

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    def service_account_key(self, project_id: str, name: str = "convergence-reader") -> dict[str, Any]:
        """A new key registered with this server (its token_uri points here)."""
        info = make_service_account_key(project_id, self.token_uri, name)
        self.register(info)
        return info

    def register(self, info: dict[str, Any]) -> None:
        private = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
        self.keys[info["client_email"]] = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def revoke_all(self) -> None:
        self.tokens.clear()

    def app(self) -> web.Application:
        application = web.Application()
        application.add_routes([
            web.post("/token", self._token),
            web.get("/v1/billingAccounts", self._billing_accounts),
            web.get("/v1/billingAccounts/{account_id}", self._billing_account),
            web.get("/compute/v1/projects/{project}/aggregated/instances", self._instances),
        ])
        return application

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        form = await request.post()
        if form.get("grant_type") != JWT_GRANT or not form.get("assertion"):
            return _oauth_error("unsupported_grant_type", "Invalid grant_type")
        assertion = str(form["assertion"])
        try:
            claims = jwt.decode(assertion, verify=False)
            key = self.keys.get(claims.get("iss", ""))
            if key is None:
                return _oauth_error("invalid_grant", "Invalid JWT Signature.")
            claims = jwt.decode(assertion, certs=key, audience=[self.token_uri, GOOGLE_TOKEN_AUDIENCE])
        except (ValueError, auth_exceptions.GoogleAuthError) as error:
            return _oauth_error("invalid_grant", f"Invalid JWT: {error}")
        token = "ya29.stand-in." + secrets.token_urlsafe(24)
        scopes = frozenset(str(claims.get("scope", "")).split())
        self.tokens[token] = Issued(claims["iss"], scopes, time.time() + self.token_lifetime)
        return web.json_response({"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"})

    def _authorize(self, request: web.Request, allowed_scopes: tuple[str, ...]) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        self.api_calls.append((request.path, dict(request.query)))
        issued = self.tokens.get(header.removeprefix("Bearer ")) if header.startswith("Bearer ") else None
        if issued is None or issued.expires_at < time.time():
            return _api_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        if not issued.scopes & set(allowed_scopes):
            return _api_error(403, "PERMISSION_DENIED", "Request had insufficient authentication scopes.")
        return None

    @staticmethod
    def _window(request: web.Request, size_param: str, default: int, total: int) -> tuple[int, int, str]:
        size = min(int(request.query.get(size_param, default)), 500)
        token = request.query.get("pageToken")
        start = int(json.loads(_b64d(token))["o"]) if token else 0
        end = min(start + size, total)
        return start, end, _b64e(json.dumps({"o": end})) if end < total else ""

    async def _billing_accounts(self, request: web.Request) -> web.Response:
        denied = self._authorize(request, SCOPE_BILLING)
        if denied is not None:
            return denied
        start, end, next_token = self._window(request, "pageSize", 50, self.billing_accounts)
        return web.json_response({"billingAccounts": [billing_account(i) for i in range(start, end)],
                                  "nextPageToken": next_token})

    def _account(self, account_id: str) -> dict[str, Any] | None:
        if account_id in self.accounts:
            return self.accounts[account_id]
        for index in range(self.billing_accounts):
            listed = billing_account(index)
            if listed["name"] == f"billingAccounts/{account_id}":
                return listed
        return None

    async def _billing_account(self, request: web.Request) -> web.Response:
        account_id = request.match_info["account_id"]
        issued = self.tokens.get(request.headers.get("Authorization", "").removeprefix("Bearer "))
        response = self._authorize(request, SCOPE_BILLING) or self._get_account(account_id, issued)
        self.account_gets.append(AccountGet(account_id, issued.client_email if issued else None, response.status))
        return response

    def _get_account(self, account_id: str, issued: Issued | None) -> web.Response:
        if not ACCOUNT_ID.match(account_id):
            return _api_error(400, "INVALID_ARGUMENT", f"Invalid billing account name: billingAccounts/{account_id}")
        viewers = self.account_viewers.get(account_id)
        if viewers is not None and (issued is None or issued.client_email not in viewers):
            return _api_error(403, "PERMISSION_DENIED", "The caller does not have permission")
        found = self._account(account_id)
        if found is None:
            return _api_error(404, "NOT_FOUND", "Requested entity was not found.")
        return web.json_response(found)

    async def _instances(self, request: web.Request) -> web.Response:
        denied = self._authorize(request, SCOPE_COMPUTE)
        if denied is not None:
            return denied
        project = request.match_info["project"]
        flat = [(zone, i) for zone, count in self.zones.items() for i in range(count)]
        start, end, next_token = self._window(request, "maxResults", 500, max(len(flat), 1))
        items: dict[str, Any] = {}
        for zone in self.zones:
            chosen = [instance(project, z, i) for z, i in flat[start:end] if z == zone]
            items[f"zones/{zone}"] = ({"instances": chosen} if chosen else
                                      {"warning": {"code": "NO_RESULTS_ON_PAGE",
                                                   "message": "There are no results for scope on this page."}})
        body: dict[str, Any] = {"kind": "compute#instanceAggregatedList",
                                "id": f"projects/{project}/aggregated/instances",
                                "items": items, "selfLink": str(request.url)}
        if next_token:
            body["nextPageToken"] = next_token
        return web.json_response(body)


def _b64e(text: str) -> str:
    import base64

    return base64.urlsafe_b64encode(text.encode()).decode()


def _b64d(text: str) -> str:
    import base64

    return base64.urlsafe_b64decode(text.encode()).decode()


def _oauth_error(error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=400)


def _api_error(status: int, kind: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": status, "message": message, "status": kind}}, status=status)


# -- a sample standard usage cost export (gcp_billing_export_v1_<ACCOUNT>) ---------------------------------

def _record(name: str, *fields: Any, mode: str = "NULLABLE") -> dict[str, Any]:
    return {"name": name, "type": "RECORD", "mode": mode, "fields": list(fields)}


def _col(name: str, kind: str = "STRING", mode: str = "NULLABLE") -> dict[str, Any]:
    return {"name": name, "type": kind, "mode": mode}


# The export's own nested schema (Cloud Billing's "standard usage cost" export table), in BigQuery JSON form.
BILLING_EXPORT_SCHEMA: list[dict[str, Any]] = [
    _col("billing_account_id"),
    _record("service", _col("id"), _col("description")),
    _record("sku", _col("id"), _col("description")),
    _col("usage_start_time", "TIMESTAMP"),
    _col("usage_end_time", "TIMESTAMP"),
    _record("project", _col("id"), _col("number"), _col("name"),
            _record("labels", _col("key"), _col("value"), mode="REPEATED"), _col("ancestry_numbers")),
    _record("labels", _col("key"), _col("value"), mode="REPEATED"),
    _record("system_labels", _col("key"), _col("value"), mode="REPEATED"),
    _record("location", _col("location"), _col("country"), _col("region"), _col("zone")),
    _col("export_time", "TIMESTAMP"),
    _col("cost", "FLOAT"),
    _col("currency"),
    _col("currency_conversion_rate", "FLOAT"),
    _record("usage", _col("amount", "FLOAT"), _col("unit"), _col("amount_in_pricing_units", "FLOAT"),
            _col("pricing_unit")),
    _record("credits", _col("name"), _col("amount", "FLOAT"), _col("full_name"), _col("id"), _col("type"),
            mode="REPEATED"),
    _record("invoice", _col("month")),
    _col("cost_type"),
    _col("cost_at_list", "FLOAT"),
]

_SERVICES = [("6F81-5844-456A", "Compute Engine", "2E27-4F75-95CD", "E2 Instance Core running in Americas"),
             ("24E6-581D-38E5", "BigQuery", "3362-E469-6BEF", "Analysis"),
             ("95FF-2EF5-5EA1", "Cloud Storage", "E5F0-6A5D-7BAD", "Standard Storage US Multi-region")]


def billing_export_row(day: str, index: int, *, account: str = "0A1B2C-3D4E5F-6A7B8C",
                       project: str = "acme-web-prod", export_time: str | None = None, cost: float | None = None,
                       credit: float = 0.0, invoice_month: str | None = None,
                       cost_type: str = "regular") -> dict[str, Any]:
    """One export row for usage hour `index % 24` of `day` (YYYY-MM-DD), as Google writes it."""
    service_id, service_name, sku_id, sku_name = _SERVICES[index % len(_SERVICES)]
    hour = index % 24
    amount = round(1.25 + (index % 7) * 0.5, 6) if cost is None else cost
    return {
        "billing_account_id": account,
        "service": {"id": service_id, "description": service_name},
        "sku": {"id": sku_id, "description": sku_name},
        "usage_start_time": f"{day}T{hour:02d}:00:00Z",
        "usage_end_time": f"{day}T{hour:02d}:59:59Z",
        "project": {"id": project, "number": "123456789012", "name": project,
                    "labels": [{"key": "env", "value": "prod"}], "ancestry_numbers": "/987654321/"},
        "labels": [{"key": "team", "value": f"team-{index % 3}"}],
        "system_labels": [],
        "location": {"location": "us-central1", "country": "US", "region": "us-central1", "zone": "us-central1-a"},
        "export_time": export_time or f"{day}T{hour:02d}:30:00Z",
        "cost": amount,
        "currency": "USD",
        "currency_conversion_rate": 1.0,
        "usage": {"amount": 3600.0, "unit": "seconds", "amount_in_pricing_units": 1.0, "pricing_unit": "hour"},
        "credits": ([{"name": "Sustained use discount", "amount": credit, "full_name": "", "id": "",
                      "type": "SUSTAINED_USAGE_DISCOUNT"}] if credit else []),
        "invoice": {"month": invoice_month or day[:7].replace("-", "")},
        "cost_type": cost_type,
        "cost_at_list": round(amount * 1.1, 6),
    }
