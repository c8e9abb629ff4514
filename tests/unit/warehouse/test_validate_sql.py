"""`convergence validate` analyzes every SQL the configs carry with Google's SQL front end, against the
configs' table schemas, and names the file and line of each refused statement."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from convergence.cli import _add_command_groups, cli
from convergence.warehouse.config_sql import SqlNames, check_sql
from convergence.warehouse.googlesql import GoogleSql
from tests.paths import REPO_ROOT

REPO = REPO_ROOT
NAMES = SqlNames(project_id="p-test", org_dataset="acme_test", central_dataset="organizations")
COSTS_SCHEMA = [{"name": "org_slug", "type": "STRING", "mode": "REQUIRED"},
                {"name": "cost_date", "type": "DATE"}, {"name": "provider", "type": "STRING"},
                {"name": "cost", "type": "NUMERIC"}]


@pytest.fixture(scope="session")
def analyzer() -> GoogleSql:
    """Google's SQL front end, loaded once for the session (check_sql reuses the shared instance)."""
    return GoogleSql.shared()


def make_configs(root: Path, files: dict[str, str]) -> Path:
    configs = root / "configs"
    (configs / "example" / "schemas").mkdir(parents=True)
    (configs / "example" / "schemas" / "costs.json").write_text(json.dumps(COSTS_SCHEMA))
    for name, text in files.items():
        path = configs / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return configs


TRANSFORM_FILE = """
    pipeline_id: example-t
    name: t
    steps:
      - step_id: t
        ps_type: generic.local_bq_transformer
        config:
          sql_file: configs/example/sql/q.sql
          parameters: {min_cost: {type: NUMERIC, value: "0.01"}}
          destination: {table: costs_out, schema_file: configs/example/schemas/costs.json}
"""

GOOD_SELECT = """
    -- {project_id}, {org_dataset}; @org_slug, @start_date, @end_date, @min_cost
    SELECT org_slug, provider, SUM(c.cost) AS cost
    FROM `{project_id}.{org_dataset}.costs` AS c
    WHERE org_slug = @org_slug AND cost_date BETWEEN @start_date AND @end_date
    GROUP BY org_slug, provider
    HAVING SUM(c.cost) > @min_cost
"""


def problems_of(configs: Path) -> list[str]:
    return [str(p) for p in check_sql(configs, NAMES).problems]


def test_a_good_query_file_passes_with_typed_parameters(analyzer: GoogleSql, tmp_path: Path) -> None:
    configs = make_configs(tmp_path, {"example/t.yml": TRANSFORM_FILE, "example/sql/q.sql": GOOD_SELECT})
    report = check_sql(configs, NAMES)
    assert (report.statements, report.problems) == (2, [])  # the SELECT, and the INSERT into costs_out


def test_a_reserved_alias_in_a_query_file_names_file_and_line(analyzer: GoogleSql, tmp_path: Path) -> None:
    planted = GOOD_SELECT.replace("AS cost\n", "AS at\n")
    configs = make_configs(tmp_path, {"example/t.yml": TRANSFORM_FILE, "example/sql/q.sql": planted})
    [problem] = problems_of(configs)
    assert problem == "configs/example/sql/q.sql:2: Syntax error: Unexpected keyword AT"


def test_an_unknown_column_names_its_line(analyzer: GoogleSql, tmp_path: Path) -> None:
    planted = GOOD_SELECT.replace("GROUP BY org_slug, provider", "GROUP BY org_slug, provider, region")
    configs = make_configs(tmp_path, {"example/t.yml": TRANSFORM_FILE, "example/sql/q.sql": planted})
    [problem] = problems_of(configs)
    assert problem == "configs/example/sql/q.sql:5: Unrecognized name: region"


def test_a_parameter_of_the_wrong_type_is_refused(analyzer: GoogleSql, tmp_path: Path) -> None:
    pipeline = TRANSFORM_FILE.replace('{type: NUMERIC, value: "0.01"}', '"2026-01-01"')  # an ISO date: DATE
    configs = make_configs(tmp_path, {"example/t.yml": pipeline, "example/sql/q.sql": GOOD_SELECT})
    [problem] = problems_of(configs)
    # This refusal carries no location: the line where the statement starts.
    assert problem == ("configs/example/sql/q.sql:2: No matching signature for operator > for argument types: "
                       "NUMERIC, DATE")


def test_a_select_is_checked_against_its_destination_columns_and_types(analyzer: GoogleSql,
                                                                        tmp_path: Path) -> None:
    select = ("SELECT org_slug, provider, SUM(cost) AS cost\nFROM `{project_id}.{org_dataset}.costs`\n"
              "GROUP BY org_slug, provider\n")
    configs = make_configs(tmp_path, {"example/t.yml": TRANSFORM_FILE, "example/sql/q.sql": select})
    report = check_sql(configs, NAMES)
    assert (report.statements, report.problems) == (2, [])  # the SELECT, and the INSERT into costs_out
    (configs / "example/sql/q.sql").write_text(select.replace("AS cost", "AS total_cost"))
    assert problems_of(configs) == ["configs/example/t.yml:9 [steps.0.config.destination]: the SELECT produces "
                                    "columns the destination does not have: ['total_cost']"]
    (configs / "example/sql/q.sql").write_text(select.replace("SUM(cost) AS cost", "MAX(provider) AS cost"))
    [problem] = problems_of(configs)
    assert problem.startswith("configs/example/sql/q.sql:1: writing to costs_out: Query column 3 has type "
                              "STRING which cannot be inserted into column cost, which has type NUMERIC")


def test_an_aggregate_of_an_aggregate_in_having_in_an_inline_query_names_the_yaml_line(
        analyzer: GoogleSql, tmp_path: Path) -> None:
    pipeline = """
        pipeline_id: example-inline
        name: inline
        steps:
          - step_id: t
            ps_type: generic.local_bq_transformer
            config:
              query: |
                SELECT provider, SUM(cost) AS cost
                FROM `{project_id}.{dataset}.costs`
                GROUP BY provider
                HAVING SUM(cost) > AVG(SUM(cost))
              destination: {table: costs_out, schema_file: configs/example/schemas/costs.json}
    """
    configs = make_configs(tmp_path, {"example/inline.yml": pipeline})
    [problem] = problems_of(configs)
    assert problem.startswith("configs/example/inline.yml:11: ")
    assert "aggregat" in problem.lower()
    assert "line 11" not in problem and "[at" not in problem


def test_a_billing_export_query_is_checked_against_the_published_export_schema(
        analyzer: GoogleSql, tmp_path: Path) -> None:
    pipeline = """
        pipeline_id: example-etl
        name: etl
        steps:
          - step_id: copy
            ps_type: gcp.bq_etl
            config:
              source:
                dataset: billing_export
                table: "gcp_billing_export_v1_*"
                query: "SELECT service.id AS service_id, cost, _TABLE_SUFFIX AS account
                  FROM `{source_table}` WHERE DATE(usage_start_time) = @start_date AND {partition_filter}"
              destination: {table: costs_out, schema_file: configs/example/schemas/costs.json}
    """
    configs = make_configs(tmp_path, {"example/etl.yml": pipeline})
    assert check_sql(configs, NAMES).problems == []
    (configs / "example" / "etl.yml").write_text(
        (configs / "example" / "etl.yml").read_text().replace("service.id", "service.name"))
    [problem] = problems_of(configs)
    assert problem.startswith("configs/example/etl.yml:10: Field name name does not exist in STRUCT<id STRING")


def test_a_source_table_of_unknown_schema_gets_its_syntax_checked_and_a_note(analyzer: GoogleSql,
                                                                           tmp_path: Path) -> None:
    pipeline = """
        pipeline_id: example-etl
        name: etl
        steps:
          - step_id: copy
            ps_type: gcp.bq_etl
            config:
              source:
                dataset: exports
                table: usage
                query: |
                  SELECT anything, at_all
                  FROM `{source_table}` WHERE day = @start_date AND {partition_filter}
              destination: {table: costs_out, schema_file: configs/example/schemas/costs.json}
    """
    configs = make_configs(tmp_path, {"example/etl.yml": pipeline})
    report = check_sql(configs, NAMES)
    assert (report.statements, report.problems) == (1, [])
    assert report.notes == ["configs/example/etl.yml: steps.0: no schema known for source table "
                            "customer-billing-project.exports.usage; its query's syntax is checked, not its names"]
    (configs / "example" / "etl.yml").write_text(
        (configs / "example" / "etl.yml").read_text().replace("at_all\n", "at_all AS at\n"))
    [problem] = problems_of(configs)
    assert problem == "configs/example/etl.yml:11: Syntax error: Unexpected keyword AT"


PROCEDURE = """
    CREATE OR REPLACE PROCEDURE `{project}.{dataset}.total_cost`(p_project_id STRING, p_dataset_id STRING,
                                                                 p_day DATE)
    BEGIN
      EXECUTE IMMEDIATE FORMAT(\"\"\"
        SELECT provider, SUM(cost) AS total
        FROM `%s.%s.costs`
        WHERE cost_date = DATE '%s'
        GROUP BY provider
      \"\"\", p_project_id, p_dataset_id, CAST(p_day AS STRING));
    END;
"""


def test_a_procedure_and_its_dynamic_sql_are_checked(analyzer: GoogleSql, tmp_path: Path) -> None:
    configs = make_configs(tmp_path, {"system/procedures/costs/total_cost.sql": PROCEDURE})
    report = check_sql(configs, NAMES)
    assert (report.statements, report.problems) == (2, [])  # the script, and its EXECUTE IMMEDIATE


def test_a_refusal_inside_execute_immediate_names_the_procedure_file_line(analyzer: GoogleSql,
                                                                         tmp_path: Path) -> None:
    planted = PROCEDURE.replace("GROUP BY provider", "GROUP BY provider, plan")
    configs = make_configs(tmp_path, {"system/procedures/costs/total_cost.sql": planted})
    [problem] = problems_of(configs)
    assert problem == "configs/system/procedures/costs/total_cost.sql:8: Unrecognized name: plan"


def test_a_syntax_error_in_a_procedure_script_names_its_line(analyzer: GoogleSql, tmp_path: Path) -> None:
    planted = PROCEDURE.replace("BEGIN\n", "BEGIN\n  SELECT 1 AS at;\n")
    configs = make_configs(tmp_path, {"system/procedures/costs/total_cost.sql": planted})
    [problem] = problems_of(configs)
    assert problem == "configs/system/procedures/costs/total_cost.sql:4: Syntax error: Unexpected keyword AT"


def test_the_statements_of_a_procedure_body_are_analyzed_with_its_typed_arguments_and_variables(
        analyzer: GoogleSql, tmp_path: Path) -> None:
    body = ("BEGIN\n  DECLARE n INT64 DEFAULT 2;\n"
            "  SELECT DATE_ADD(p_day, INTERVAL n DAY) AS next_day, p_project_id AS project;\n")
    configs = make_configs(tmp_path, {"system/procedures/costs/total_cost.sql": PROCEDURE.replace("BEGIN\n", body)})
    report = check_sql(configs, NAMES)
    assert (report.statements, report.problems) == (3, [])
    wrong = body.replace("DATE_ADD(p_day,", "DATE_ADD(n,")  # an INT64 variable
    (configs / "system/procedures/costs/total_cost.sql").write_text(textwrap.dedent(PROCEDURE).lstrip()
                                                                    .replace("BEGIN\n", wrong))
    [problem] = problems_of(configs)
    assert problem.startswith("configs/system/procedures/costs/total_cost.sql:5: No matching signature for function "
                              "DATE_ADD")


def test_the_cli_lists_the_refusal_with_file_and_line_and_exits_non_zero(analyzer: GoogleSql,
                                                                        tmp_path: Path) -> None:
    planted = GOOD_SELECT.replace("AS cost\n", "AS at\n")
    configs = make_configs(tmp_path, {"example/t.yml": TRANSFORM_FILE, "example/sql/q.sql": planted})
    _add_command_groups()
    result = CliRunner().invoke(cli, ["validate", str(configs)])
    assert result.exit_code == 1
    assert "error: configs/example/sql/q.sql:2: Syntax error: Unexpected keyword AT" in result.output
    assert "sql: 1 statement(s) analyzed with Google's SQL front end" in result.output


def test_the_repository_configs_pass(analyzer: GoogleSql) -> None:
    report = check_sql(REPO / "configs", NAMES)
    assert report.problems == [], [str(p) for p in report.problems]
    assert report.skipped is None
    # billing_export.sql, two transformer files, the procedure script, its two SELECTs and EXECUTE IMMEDIATEs
    assert report.statements >= 8
    _add_command_groups()
    result = CliRunner().invoke(cli, ["validate"])
    assert result.exit_code == 0, result.output
    assert "refused" in result.output and "0 refused" in result.output


def test_without_the_analyzer_validate_says_it_skipped_the_sql_and_checks_the_rest(tmp_path: Path) -> None:
    planted = GOOD_SELECT.replace("AS cost\n", "AS at\n")
    bad_step = TRANSFORM_FILE.replace("pipeline_id: example-t", "pipeline_id: example-u").replace(
        "generic.local_bq_transformer", "nowhere.nothing")
    configs = make_configs(tmp_path, {"example/t.yml": TRANSFORM_FILE, "example/sql/q.sql": planted,
                                      "example/u.yml": bad_step})
    # As in an image without the `sqlcheck` extra: `import zetasql` raises ImportError.
    program = ("import sys; sys.modules['zetasql'] = None; sys.argv = ['convergence', 'validate', sys.argv[1]]; "
               "from convergence.cli import main; main()")
    result = subprocess.run([sys.executable, "-c", program, str(configs)], capture_output=True, text=True,  # noqa: S603
                            timeout=300, env={**os.environ}, cwd=REPO)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "unknown ps_type 'nowhere.nothing'" in output
    [skipped] = [line for line in output.splitlines() if line.startswith("sql:")]
    assert skipped == ("sql: check skipped: Google's SQL analyzer is not installed: "
                       "pip install 'convergence[sqlcheck]'")
    assert "Unexpected keyword" not in output


def test_a_value_pasted_as_placeholder_names_its_line(analyzer: GoogleSql, tmp_path: Path) -> None:
    planted = GOOD_SELECT.replace("@start_date AND", "{start_date} AND")
    configs = make_configs(tmp_path, {"example/t.yml": TRANSFORM_FILE, "example/sql/q.sql": planted})
    report = check_sql(configs, NAMES)
    [problem] = [str(p) for p in report.problems]
    assert problem.startswith("configs/example/sql/q.sql:4: placeholder {start_date} in SQL")
