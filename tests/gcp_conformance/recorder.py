"""Records what a process sends through google-cloud-bigquery: statements (text, typed parameters,
default dataset) and table schemas, one JSON line each, in `$CONVERGENCE_BQ_RECORD_DIR/<pid>.jsonl`.

Every REST call of the client goes through `Client._call_api`; loads go through the upload helpers with
their job resource. Both are wrapped once per process. Observers (the strict limits layer) see each call
before it is sent and may refuse it, as BigQuery would.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import json
import os
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

RECORD_DIR_ENV = "CONVERGENCE_BQ_RECORD_DIR"
CURRENT_TEST_ENV = "CONVERGENCE_CURRENT_TEST"

# (method, path, request data, response, after) -> None: called before each call (after=False, response
# None) and after it (after=True). Raising before a call refuses it.
Observer = Callable[[str, str, Mapping[str, Any] | None, Any, bool], None]
_observers: list[Observer] = []
_seen: set[str] = set()
_lock = threading.Lock()
_installed = False


def add_observer(observer: Observer) -> None:
    _observers.append(observer)


def current_test() -> str:
    return os.environ.get(CURRENT_TEST_ENV, "<outside any test>")


def _write(record: dict[str, Any]) -> None:
    directory = os.environ.get(RECORD_DIR_ENV)
    if not directory:
        return
    record = {**record, "test": current_test(), "pid": os.getpid()}
    line = (json.dumps(record, default=str) + "\n").encode()
    # One O_APPEND write per record: whole lines even if the process is killed mid-run.
    fd = os.open(Path(directory) / f"{os.getpid()}.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _once(kind: str, payload: Any) -> bool:
    key = hashlib.sha256(json.dumps([kind, payload], sort_keys=True, default=str).encode()).hexdigest()
    with _lock:
        if key in _seen:
            return False
        _seen.add(key)
        return True


def _dataset(ref: Mapping[str, Any] | None) -> str | None:
    if not ref or not ref.get("datasetId"):
        return None
    return f"{ref.get('projectId')}.{ref['datasetId']}"


def _parameters(items: Any) -> dict[str, Any]:
    return {item.get("name"): item.get("parameterType") or {} for item in items or [] if item.get("name")}


def record_statement(sql: str, parameters: Mapping[str, Any], default_dataset: str | None, dry_run: bool) -> None:
    payload = {"sql": sql, "parameters": dict(parameters), "default_dataset": default_dataset}
    if _once("statement", payload):
        _write({"kind": "statement", **payload, "dry_run": dry_run})


def record_table(resource: Mapping[str, Any]) -> None:
    ref = resource.get("tableReference") or {}
    schema = (resource.get("schema") or {}).get("fields")
    if not schema or not ref.get("tableId"):
        return
    payload = {"tableReference": ref, "schema": {"fields": schema},
               "timePartitioning": resource.get("timePartitioning")}
    if _once("table", payload):
        _write({"kind": "table", **payload})


def _query_of(method: str, path: str, data: Any) -> Mapping[str, Any] | None:
    if method != "POST" or not isinstance(data, Mapping):
        return None
    if path.endswith("/queries"):
        return data
    if path.endswith("/jobs"):
        return (data.get("configuration") or {}).get("query")
    return None


_job_sql: dict[str, str] = {}  # job id -> its SQL, to name the statement when a later poll of the job fails


def _not_found(method: str, path: str, data: Any, response: Any) -> str | None:
    """The SQL of a query that BigQuery (the emulator) answered NotFound for, if this call says so."""
    if not isinstance(response, Mapping):
        return None
    failed = response.get("_error") == "NotFound" or (
        ((response.get("status") or {}).get("errorResult") or {}).get("reason") == "notFound")
    if not failed:
        return None
    query = _query_of(method, path, data)
    if query and query.get("query"):
        return str(query["query"])
    job_id = path.rstrip("/").rsplit("/", 1)[-1]
    return _job_sql.get(job_id)


def observe(method: str, path: str, data: Mapping[str, Any] | None, response: Any, after: bool) -> None:
    """Records one call: before it is sent from the request, after it from the response."""
    if not after:
        query = _query_of(method, path, data)
        job_id = ((data or {}).get("jobReference") or {}).get("jobId") if isinstance(data, Mapping) else None
        if query and query.get("query") and job_id:
            with _lock:
                if len(_job_sql) >= 10_000:  # only recent jobs are polled
                    del _job_sql[next(iter(_job_sql))]
                _job_sql[job_id] = str(query["query"])
    elif (sql := _not_found(method, path, data, response)) is not None:
        _write({"kind": "statement_not_found", "sql": sql})  # a missing table, and BigQuery says so too
    if not after and isinstance(data, Mapping):
        if path.endswith("/queries") and method == "POST":  # jobs.query
            record_statement(data.get("query", ""), _parameters(data.get("queryParameters")),
                             _dataset(data.get("defaultDataset")), bool(data.get("dryRun")))
        elif path.endswith("/jobs") and method == "POST":  # jobs.insert
            configuration = data.get("configuration") or {}
            query = configuration.get("query")
            if query:
                record_statement(query.get("query", ""), _parameters(query.get("queryParameters")),
                                 _dataset(query.get("defaultDataset")), bool(configuration.get("dryRun")))
            load = configuration.get("load")
            if load and load.get("schema"):
                record_table({"tableReference": load.get("destinationTable"), "schema": load["schema"],
                              "timePartitioning": load.get("timePartitioning")})
        elif "/tables" in path and method in ("POST", "PUT", "PATCH"):
            record_table(data)
    if isinstance(response, Mapping) and response.get("kind") == "bigquery#table":
        record_table(response)
    for observer in _observers:
        observer(method, path, data, response, after)


def install() -> None:
    """Wraps the client's REST and upload paths in this process (once)."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    from google.cloud.bigquery import client as client_module

    client_class = client_module.Client
    call_api = client_class._call_api

    def _call_api(self: Any, retry: Any, span_name: Any = None, span_attributes: Any = None, job_ref: Any = None,
                  headers: Any = None, **kwargs: Any) -> Any:
        method, path, data = kwargs.get("method", "GET"), kwargs.get("path", ""), kwargs.get("data")
        observe(method, path, data, None, False)
        try:
            response = call_api(self, retry, span_name=span_name, span_attributes=span_attributes,
                                job_ref=job_ref, headers=headers, **kwargs)
        except Exception as error:
            observe(method, path, data, {"_error": type(error).__name__}, True)
            raise
        observe(method, path, data, response, True)
        return response

    client_class._call_api = _call_api

    for name in ("_do_multipart_upload", "_do_resumable_upload"):
        upload = getattr(client_class, name)

        def wrapped(self: Any, stream: Any, metadata: Any, *args: Any, _upload: Any = upload, **kwargs: Any) -> Any:
            path = f"/projects/{self.project}/jobs"
            observe("POST", path, metadata, None, False)
            response = _upload(self, stream, metadata, *args, **kwargs)
            observe("POST", path, metadata, _json(response), True)
            return response

        setattr(client_class, name, wrapped)


def _json(response: Any) -> Any:
    try:
        return response.json()
    except Exception:  # noqa: BLE001 - only the recorded resource is lost
        return None


class _InstallAfterImport(importlib.abc.MetaPathFinder):
    """Installs the recorder right after `google.cloud.bigquery.client` is first imported, so processes
    that never use BigQuery (the emulators, the provider stand-ins) pay nothing."""

    target = "google.cloud.bigquery.client"

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != self.target:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_then_install(module: Any) -> None:
            exec_module(module)
            sys.modules[fullname] = module
            _install_observers_from_env()
            install()

        loader.exec_module = exec_then_install  # type: ignore[method-assign]
        return spec


def _install_observers_from_env() -> None:
    if os.environ.get("CONVERGENCE_BQ_STRICT_LIMITS") == "1":
        from tests.gcp_conformance import limits

        limits.enable()


def install_on_import() -> None:
    if "google.cloud.bigquery.client" in sys.modules:
        _install_observers_from_env()
        install()
    else:
        sys.meta_path.insert(0, _InstallAfterImport())
