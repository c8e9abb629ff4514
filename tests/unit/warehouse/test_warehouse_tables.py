"""Tables from JSON schema files, schema evolution, and the 14-table bootstrap (against the emulator)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from convergence.warehouse.bootstrap import CENTRAL_TABLES, bootstrap, load_bootstrap_config
from convergence.warehouse.client import make_client
from convergence.warehouse.tables import SchemaFileError, ensure_dataset, ensure_table, load_schema
from tests.paths import REPO_ROOT
from tests.support.warehouse import count_rows, emulator_settings, unique

pytestmark = pytest.mark.emulator

BASE = [
    {"name": "org_slug", "type": "STRING", "mode": "REQUIRED", "description": "owner"},
    {"name": "usage_date", "type": "DATE", "mode": "REQUIRED"},
    {"name": "amount", "type": "FLOAT64"},
    {"name": "meta", "type": "RECORD", "fields": [{"name": "source", "type": "STRING"}]},
]


def write_schema(tmp_path: Path, fields: list[dict], name: str = "schema.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(fields))
    return path


@pytest.fixture
def env(local_stack):
    settings = emulator_settings(local_stack)
    client = make_client(settings)
    dataset = unique("tables")
    ensure_dataset(client, dataset)
    return settings, client, dataset


def test_schema_files_are_validated(tmp_path):
    assert [f.name for f in load_schema(write_schema(tmp_path, BASE))] == ["org_slug", "usage_date", "amount", "meta"]
    bad = [
        [{"name": "a`b", "type": "STRING"}],
        [{"name": "a", "type": "VARCHAR"}],
        [{"name": "a", "type": "STRING", "mode": "OPTIONAL"}],
        [{"name": "a", "type": "STRING"}, {"name": "A", "type": "INT64"}],
        [{"name": "r", "type": "RECORD"}],
        [],
    ]
    for i, fields in enumerate(bad):
        with pytest.raises(SchemaFileError):
            load_schema(write_schema(tmp_path, fields, f"bad{i}.json"))
    with pytest.raises(SchemaFileError, match="not found"):
        load_schema(tmp_path / "missing.json")


def test_create_then_unchanged_then_evolve(env, tmp_path):
    settings, client, dataset = env
    path = write_schema(tmp_path, BASE)
    first = ensure_table(client, dataset, "costs", path, partitioning={"field": "usage_date"}, clustering=["org_slug"])
    assert first.action == "created"
    table = client.get_table(first.table_id)
    assert table.time_partitioning.field == "usage_date" and table.clustering_fields == ["org_slug"]
    assert table.schema[0].description == "owner"

    again = ensure_table(client, dataset, "costs", path, partitioning={"field": "usage_date"}, clustering=["org_slug"])
    assert (again.action, again.added_columns, again.problems) == ("unchanged", [], [])

    grown = write_schema(tmp_path, [*BASE, {"name": "currency", "type": "STRING", "description": "ISO code"},
                                    {"name": "tags", "type": "STRING", "mode": "REPEATED"}], "grown.json")
    change = ensure_table(client, dataset, "costs", grown, partitioning={"field": "usage_date"},
                          clustering=["org_slug"])
    assert change.action == "updated" and change.added_columns == ["currency", "tags"] and not change.problems
    fields = {f.name: f for f in client.get_table(change.table_id).schema}
    assert fields["currency"].description == "ISO code" and fields["tags"].mode == "REPEATED"
    # The new columns are usable (the emulator keeps data and metadata in step).
    errors = client.insert_rows_json(change.table_id, [{"org_slug": "acme", "usage_date": "2024-01-01",
                                                        "currency": "USD", "tags": ["a"]}])
    assert errors == []
    assert count_rows(client, change.table_id, "currency = @c", c="USD") == 1
    assert ensure_table(client, dataset, "costs", grown, partitioning={"field": "usage_date"},
                        clustering=["org_slug"]).action == "unchanged"


def test_changes_bigquery_cannot_apply_are_reported_not_applied(env, tmp_path):
    settings, client, dataset = env
    ensure_table(client, dataset, "costs", write_schema(tmp_path, BASE), partitioning="usage_date")
    changed = [
        {"name": "org_slug", "type": "STRING", "mode": "NULLABLE"},   # mode change
        {"name": "usage_date", "type": "TIMESTAMP", "mode": "REQUIRED"},  # type change
        {"name": "meta", "type": "RECORD", "fields": [{"name": "source", "type": "STRING"},
                                                      {"name": "extra", "type": "STRING"}]},  # nested addition
        {"name": "must", "type": "STRING", "mode": "REQUIRED"},  # new REQUIRED column
        {"name": "ok", "type": "INT64"},
    ]  # `amount` removed
    change = ensure_table(client, dataset, "costs", write_schema(tmp_path, changed, "changed.json"),
                          partitioning=None)
    text = "\n".join(change.problems)
    assert "org_slug: mode REQUIRED in the table, NULLABLE" in text
    assert "usage_date: type DATE in the table, TIMESTAMP" in text
    assert "new nested field meta.extra" in text
    assert "new column must is REQUIRED" in text
    assert "column amount is in the table but not in the schema file" in text
    assert "partitioned but config asks for none" in text
    assert change.added_columns == ["ok"]
    fields = {f.name: f for f in client.get_table(change.table_id).schema}
    assert fields["usage_date"].field_type == "DATE" and "amount" in fields and "must" not in fields


def test_layout_columns_must_exist(env, tmp_path):
    settings, client, dataset = env
    with pytest.raises(SchemaFileError, match="partitioning column"):
        ensure_table(client, dataset, "t1", write_schema(tmp_path, BASE), partitioning="nope")
    with pytest.raises(SchemaFileError, match="must be DATE/TIMESTAMP/DATETIME"):
        ensure_table(client, dataset, "t1", write_schema(tmp_path, BASE), partitioning="amount")
    with pytest.raises(SchemaFileError, match="clustering column"):
        ensure_table(client, dataset, "t1", write_schema(tmp_path, BASE), clustering=["nope"])


def test_bootstrap_config_lists_the_14_tables_with_schemas():
    config = load_bootstrap_config(REPO_ROOT / "configs" / "setup" / "bootstrap")
    assert sorted(t.name for t in config.tables) == sorted(CENTRAL_TABLES)
    assert len(CENTRAL_TABLES) == 14
    for spec in config.tables:
        assert spec.schema_path.is_file(), spec.schema_path
        names = [f.name for f in load_schema(spec.schema_path)]
        assert "org_slug" in names, spec.name
        assert spec.clustering and spec.clustering[0] == "org_slug", spec.name


def test_bootstrap_twice_creates_14_tables_then_changes_nothing(local_stack):
    settings = emulator_settings(local_stack)
    client = make_client(settings)
    first = bootstrap(client, settings)
    assert first.dataset_created and first.ok
    assert sorted(first.created) == sorted(CENTRAL_TABLES)

    second = bootstrap(client, settings)
    assert not second.changed and second.ok
    assert sorted(second.unchanged) == sorted(CENTRAL_TABLES)

    raw = yaml.safe_load((REPO_ROOT / "configs/setup/bootstrap/config.yml").read_text())["tables"]
    for name in CENTRAL_TABLES:
        table = client.get_table(f"{client.project}.{settings.central_dataset}.{name}")
        layout = raw[name]
        assert table.clustering_fields == layout["clustering"], name
        expected = layout.get("partitioning")
        if expected:
            assert table.time_partitioning is not None, name
            assert (table.time_partitioning.field, table.time_partitioning.type_) == (expected["field"],
                                                                                      expected.get("type", "DAY"))
        else:
            assert table.time_partitioning is None, name
        assert [f.name for f in table.schema] == [f.name for f in load_schema(
            REPO_ROOT / f"configs/setup/bootstrap/schemas/{name}.json")]


def test_bootstrap_adds_new_columns_and_reports_the_rest(local_stack, tmp_path):
    settings = emulator_settings(local_stack)
    client = make_client(settings)
    source = REPO_ROOT / "configs" / "setup" / "bootstrap"
    copy = tmp_path / "bootstrap"
    (copy / "schemas").mkdir(parents=True)
    (copy / "config.yml").write_text((source / "config.yml").read_text())
    for path in (source / "schemas").glob("*.json"):
        (copy / "schemas" / path.name).write_text(path.read_text())
    assert bootstrap(client, settings, copy).ok

    profiles = json.loads((copy / "schemas/org_profiles.json").read_text())
    profiles.append({"name": "website", "type": "STRING", "description": "Company website"})
    (copy / "schemas/org_profiles.json").write_text(json.dumps(profiles))
    quotas = [f for f in json.loads((copy / "schemas/org_usage_quotas.json").read_text())
              if f["name"] != "daily_limit"]
    (copy / "schemas/org_usage_quotas.json").write_text(json.dumps(quotas))

    report = bootstrap(client, settings, copy)
    assert report.updated == ["org_profiles"]
    assert report.problems == ["org_usage_quotas: column daily_limit is in the table but not in the schema file "
                               "(columns are never dropped)"]
    assert "website" in [f.name for f in client.get_table(
        f"{client.project}.{settings.central_dataset}.org_profiles").schema]
