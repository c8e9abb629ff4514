"""Stored procedures on the emulator: created from a SQL file, listed, called with literal arguments."""

from __future__ import annotations

from datetime import date

import pytest

from convergence.warehouse.client import make_client
from convergence.warehouse.procedures import create_or_replace_from_sql_file, execute_procedure, list_procedures
from convergence.warehouse.tables import ensure_dataset
from tests.support.warehouse import emulator_settings, unique

pytestmark = pytest.mark.emulator

PROCEDURE = """CREATE OR REPLACE PROCEDURE `{project}.{dataset}.sp_fill_daily`(p_org STRING, p_day DATE, p_n INT64)
BEGIN
  DECLARE total INT64 DEFAULT 0;
  DELETE FROM `{project}.{dataset}.daily` WHERE org_slug = p_org AND day = p_day;
  INSERT INTO `{project}.{dataset}.daily` (org_slug, day, n) VALUES (p_org, p_day, p_n);
  SET total = (SELECT SUM(n) FROM `{project}.{dataset}.daily` WHERE org_slug = p_org);
  SELECT total AS total_for_org;
END
"""


def test_procedure_from_file_then_call_twice_is_idempotent(local_stack, tmp_path):
    settings = emulator_settings(local_stack)
    client = make_client(settings)
    dataset = unique("procs")
    ensure_dataset(client, dataset)
    client.query(f"CREATE TABLE `{client.project}.{dataset}.daily` (org_slug STRING, day DATE, n INT64)").result()
    path = tmp_path / "sp_fill_daily.sql"
    path.write_text(PROCEDURE)
    assert create_or_replace_from_sql_file(client, dataset, path) == "sp_fill_daily"
    assert create_or_replace_from_sql_file(client, dataset, path) == "sp_fill_daily"  # sync again: fine
    assert list_procedures(client, dataset) == ["sp_fill_daily"]
    for _ in range(2):
        rows = execute_procedure(client, dataset, "sp_fill_daily", ["acme", date(2024, 3, 1), 7])
    assert rows == [{"total_for_org": 7}]


def test_procedure_file_must_create_the_procedure_it_is_named_after(local_stack, tmp_path):
    settings = emulator_settings(local_stack)
    client = make_client(settings)
    path = tmp_path / "sp_other.sql"
    path.write_text(PROCEDURE)
    with pytest.raises(ValueError, match="expected"):
        create_or_replace_from_sql_file(client, "procs", path)
    (tmp_path / "sp_x.sql").write_text("DROP TABLE `{project}.{dataset}.daily`")
    with pytest.raises(ValueError, match="CREATE"):
        create_or_replace_from_sql_file(client, "procs", tmp_path / "sp_x.sql")
