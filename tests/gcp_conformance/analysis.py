"""Analyzes recorded statements with Google's SQL front end (warehouse.googlesql), against a catalog built
from the recorded table schemas."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convergence.warehouse.googlesql import GoogleSql, Statement, TableSchema, index_tables


@dataclass(frozen=True)
class Finding:
    sql: str
    message: str
    test: str

    def describe(self) -> str:
        return f"- sent by {self.test}\n  refused: {self.message}\n  statement:\n    " + \
            "\n    ".join(self.sql.strip().splitlines())


def read_records(record_dir: Path) -> Iterator[dict[str, Any]]:
    for path in sorted(record_dir.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a SIGKILL mid-write


def analyze(record_dir: Path, analyzer: GoogleSql | None = None) -> tuple[int, list[Finding]]:
    """(distinct statements analyzed, refusals)."""
    records = list(read_records(record_dir))
    tables = index_tables(schema for record in records if record["kind"] == "table"
                          if (schema := TableSchema.from_resource(record)) is not None)
    statements: dict[str, tuple[Statement, str]] = {}
    for record in records:
        if record["kind"] != "statement" or not record["sql"].strip():
            continue
        key = json.dumps([record["sql"], record["parameters"], record["default_dataset"]], sort_keys=True)
        statements.setdefault(key, (Statement(record["sql"], record["parameters"], record["default_dataset"]),
                                    record["test"]))
    # A statement the emulator also answered 404 for reads a table that does not exist, which is what the
    # test wanted to see (an org with no such table yet): the analyzer's "Table not found" agrees with it.
    not_found = {record["sql"] for record in records if record["kind"] == "statement_not_found"}
    analyzer = analyzer or GoogleSql.shared()
    findings = []
    for statement, test in statements.values():
        refusal = analyzer.check(statement, tables)
        if refusal is None or (statement.sql in not_found and "Table not found" in refusal.message):
            continue
        findings.append(Finding(statement.sql, refusal.message, test))
    return len(statements), findings
