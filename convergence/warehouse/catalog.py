"""Stored procedures as files: `configs/system/procedures/{domain}/{name}.sql` <-> BigQuery routines.

Each file creates one procedure whose name is the file's stem, in the dataset the catalog manages
(the central `organizations` dataset by default). The file starts with
the CREATE statement (documentation goes inside the body):

    CREATE OR REPLACE PROCEDURE `{project}.{dataset}.calculate_subscription_cost`(...)
    BEGIN ... END;

`{project}` and `{dataset}` are replaced by validated names (warehouse.procedures, which also creates
the routine and CALLs it with literal arguments that cannot carry SQL). `sync` re-creates only what
changed: the SHA-256 of the rendered SQL is kept in the routine's description
(`convergence:sha256=...`) and compared on the next sync; `force` re-creates everything. Routines
without a file are reported, never deleted by sync.
"""

from __future__ import annotations

import builtins
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from google.api_core.exceptions import NotFound
from google.cloud import bigquery

from convergence.pipeline.errors import ErrorCode, PermanentStepError
from convergence.warehouse.client import call_retry
from convergence.warehouse.identifiers import InvalidIdentifier, identifier, project_id
from convergence.warehouse.procedures import create_or_replace_from_sql_file, execute_procedure

log = structlog.get_logger(__name__)
PROCEDURES_SUBDIR = Path("system") / "procedures"
HASH_PREFIX = "convergence:sha256="
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")
_CREATE = re.compile(r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?PROCEDURE\s+`?([^`(\s]+)`?\s*\(", re.IGNORECASE)


class ProcedureNotFound(PermanentStepError):
    code = ErrorCode.PROCEDURE_NOT_FOUND


@dataclass(frozen=True)
class ProcedureFile:
    name: str
    domain: str
    path: Path

    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    def render(self, project: str, dataset: str) -> str:
        """The SQL as warehouse.procedures runs it (same substitution), checked to create this procedure."""
        sql = self.text().replace("{project}", project).replace("{dataset}", dataset)
        match = _CREATE.match(sql)
        expected = f"{project}.{dataset}.{self.name}"
        if not match or match.group(1) != expected:
            found = match.group(1) if match else "no CREATE PROCEDURE"
            raise PermanentStepError(
                f"{self.domain}/{self.path.name} must start by creating procedure "
                f"`{{project}}.{{dataset}}.{self.name}` (the file's name), found {found}",
                code=ErrorCode.CONFIG_INVALID)
        return sql

    def digest(self, project: str, dataset: str) -> str:
        return hashlib.sha256(self.render(project, dataset).encode()).hexdigest()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "domain": self.domain, "file": f"{self.domain}/{self.path.name}",
                "sha256": hashlib.sha256(self.text().encode()).hexdigest()}


def procedure_files(configs_dir: Path) -> list[ProcedureFile]:
    root = Path(configs_dir) / PROCEDURES_SUBDIR
    if not root.is_dir():
        return []
    files: dict[str, ProcedureFile] = {}
    for path in sorted(root.glob("*/*.sql")):
        name, domain = path.stem, path.parent.name
        if not _NAME.match(name):
            raise PermanentStepError(f"procedure file {domain}/{path.name}: name is not a valid routine id",
                                     code=ErrorCode.CONFIG_INVALID)
        if name in files:
            raise PermanentStepError(f"procedure {name} is defined twice ({files[name].domain} and {domain})",
                                     code=ErrorCode.CONFIG_INVALID)
        files[name] = ProcedureFile(name, domain, path)
    return list(files.values())


def missing_routine(error: BaseException) -> bool:
    """True when a CALL failed because the routine (or its dataset) does not exist."""
    text = str(error).lower()
    return isinstance(error, NotFound) and any(word in text for word in ("routine", "procedure", "dataset"))


def _stored_digest(description: str | None) -> str | None:
    if description and description.startswith(HASH_PREFIX):
        return description[len(HASH_PREFIX):].split()[0]
    return None


class ProcedureCatalog:
    """Procedures of one dataset (default: the central dataset) and their files. Blocking calls."""

    def __init__(self, client: Any, settings: Any, dataset: str | None = None):
        self.client = client
        self.settings = settings
        self.project = project_id(client.project)
        self.dataset = identifier(dataset or settings.central_dataset, "dataset")
        self.configs_dir = Path(settings.configs_dir)

    # -- files ---------------------------------------------------------------------------------------
    def files(self) -> list[dict[str, Any]]:
        return [f.describe() for f in procedure_files(self.configs_dir)]

    def _file(self, name: str) -> ProcedureFile:
        for item in procedure_files(self.configs_dir):
            if item.name == name:
                return item
        raise ProcedureNotFound(f"no procedure file {name}.sql under configs/{PROCEDURES_SUBDIR}")

    # -- routines ------------------------------------------------------------------------------------
    def _ref(self, name: str) -> str:
        return f"{self.project}.{self.dataset}.{identifier(name, 'procedure')}"

    def _routines(self) -> dict[str, Any]:
        try:
            listed = list(self.client.list_routines(f"{self.project}.{self.dataset}"))
        except NotFound:
            return {}
        return {r.routine_id: r for r in listed}

    def list(self) -> list[dict[str, Any]]:
        known = {f.name: f for f in procedure_files(self.configs_dir)}
        out = []
        for name, routine in sorted(self._routines().items()):
            full = self.client.get_routine(routine.reference)
            digest = _stored_digest(full.description)
            item = known.get(name)
            in_sync = None
            if item is not None:
                in_sync = digest == item.digest(self.project, self.dataset)
            out.append({"name": name, "type": full.type_, "dataset": self.dataset,
                        "modified": full.modified.isoformat() if full.modified else None,
                        "has_file": item is not None, "in_sync": in_sync})
        return out

    def get(self, name: str) -> dict[str, Any]:
        try:
            routine = self.client.get_routine(self._ref(name))
        except NotFound:
            raise ProcedureNotFound(f"procedure {self.dataset}.{name} does not exist") from None
        return {
            "name": name, "dataset": self.dataset, "type": routine.type_, "language": routine.language,
            "arguments": [{"name": a.name, "type": _type_name(a.data_type)} for a in routine.arguments or []],
            "body": routine.body, "sha256": _stored_digest(routine.description),
            "created": routine.created.isoformat() if routine.created else None,
            "modified": routine.modified.isoformat() if routine.modified else None,
        }

    def put(self, name: str) -> dict[str, Any]:
        """Create or replace one procedure from its file."""
        item = self._file(name)
        sql = item.render(self.project, self.dataset)
        digest = hashlib.sha256(sql.encode()).hexdigest()
        self._ensure_dataset()
        try:
            create_or_replace_from_sql_file(self.client, self.dataset, item.path, project=self.project,
                                            retry=call_retry(self.settings))
        except ValueError as error:
            raise PermanentStepError(str(error), code=ErrorCode.CONFIG_INVALID) from None
        self._record_digest(name, digest, item)
        log.info("procedure created", procedure=f"{self.dataset}.{name}", file=item.describe()["file"])
        return {"name": name, "sha256": digest, "file": item.describe()["file"]}

    def delete(self, name: str) -> bool:
        try:
            self.client.delete_routine(self._ref(name))
        except NotFound:
            return False
        return True

    # builtins.list in signatures: in the class body `list` names the method above.
    def sync(self, force: bool = False) -> dict[str, builtins.list[str]]:
        """Create missing procedures, re-create changed ones (all with `force`), leave the rest alone."""
        report: dict[str, list[str]] = {"created": [], "updated": [], "unchanged": [], "failed": [],
                                        "without_file": []}
        existing = self._routines()
        files = procedure_files(self.configs_dir)
        for item in files:
            try:
                wanted = item.digest(self.project, self.dataset)
                current = existing.get(item.name)
                stored = _stored_digest(self.client.get_routine(current.reference).description) if current else None
                if current is not None and stored == wanted and not force:
                    report["unchanged"].append(item.name)
                    continue
                self.put(item.name)
                report["updated" if current is not None else "created"].append(item.name)
            except Exception as error:  # noqa: BLE001 - one bad file must not stop the others
                log.error("procedure sync failed", procedure=item.name, error=str(error)[:300])
                report["failed"].append(f"{item.name}: {str(error)[:300]}")
        names = {f.name for f in files}
        report["without_file"] = sorted(n for n in existing if n not in names)
        return report

    def call(self, name: str, arguments: builtins.list[tuple[str, str, Any]]) -> builtins.list[dict[str, Any]]:
        """CALL the procedure with its (name, type, value) arguments, already coerced to their types; they
        become literals that cannot carry SQL (CALL takes no query parameters on the emulator). Returns
        the rows of the procedure's last statement."""
        values = [value for _, _, value in arguments]
        try:
            return execute_procedure(self.client, self.dataset, identifier(name, "procedure"), values,
                                     project=self.project, retry=call_retry(self.settings))
        except InvalidIdentifier as error:
            raise PermanentStepError(f"procedure {name}: {error}", code=ErrorCode.INVALID_PARAMETERS) from None

    # -- helpers -------------------------------------------------------------------------------------
    def _ensure_dataset(self) -> None:
        dataset = bigquery.Dataset(f"{self.project}.{self.dataset}")
        dataset.location = self.settings.bigquery_location
        self.client.create_dataset(dataset, exists_ok=True)

    def _record_digest(self, name: str, digest: str, item: ProcedureFile) -> None:
        routine = self.client.get_routine(self._ref(name))
        routine.description = f"{HASH_PREFIX}{digest} file={item.domain}/{item.path.name}"
        try:
            self.client.update_routine(routine, ["description"])
        except Exception as error:  # noqa: BLE001 - without the digest the next sync simply re-creates it
            log.warning("could not record the procedure digest", procedure=name, error=str(error)[:200])


def _type_name(data_type: Any) -> str | None:
    if data_type is None:
        return None
    kind = getattr(data_type, "type_kind", None)
    return getattr(kind, "name", None) or (str(kind) if kind else None)
