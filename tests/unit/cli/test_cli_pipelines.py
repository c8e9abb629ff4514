"""`convergence pipelines list|show|new|schema` and `--format`, through the real CLI process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import yaml

from tests.paths import REPO_ROOT


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "convergence", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def test_new_writes_a_pipeline_and_processor_that_validate_list_and_show(tmp_path: Path) -> None:
    configs, plugins = tmp_path / "configs", tmp_path / "plugins"
    (plugins / "acme_plugins").mkdir(parents=True)
    (plugins / "acme_plugins" / "__init__.py").write_text("")
    configs.mkdir()
    env = {"CONFIGS_DIR": str(configs), "PROCESSOR_PACKAGES": '["convergence.processors", "acme_plugins"]',
           "PYTHONPATH": os.pathsep.join([str(plugins), os.environ.get("PYTHONPATH", "")])}
    made = cli("pipelines", "new", "acmeco/usage/daily_pull", "--package", "acme_plugins", env=env)
    assert made.returncode == 0, made.stderr
    assert (configs / "acmeco" / "usage" / "daily_pull.yml").is_file()
    assert (plugins / "acme_plugins" / "acmeco" / "usage.py").is_file()
    checked = cli("validate", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    listed = cli("pipelines", "list", "--format", "json", env=env)
    [item] = json.loads(listed.stdout)
    assert item == {"pipeline": "acmeco/usage/daily_pull", "file": "acmeco/usage/daily_pull.yml", "valid": True,
                    "name": "Daily pull", "steps": ["acmeco.usage"], "schedule": None, "tags": ["acmeco"]}
    assert json.loads(cli("pipelines", "list", "--json", env=env).stdout) == [item]  # the alias
    shown = yaml.safe_load(cli("pipelines", "show", "acmeco/usage/daily_pull", env=env).stdout)
    assert shown["steps"][0]["ps_type"] == "acmeco.usage" and shown["timeout_minutes"] == 30
    # A second pipeline on the same ps_type reuses the processor; an existing file is never overwritten.
    again = cli("pipelines", "new", "acmeco/usage/weekly_pull", "--package", "acme_plugins", env=env)
    assert again.returncode == 0 and "usage.py" not in again.stdout
    refused = cli("pipelines", "new", "acmeco/usage/daily_pull", "--package", "acme_plugins", env=env)
    assert refused.returncode == 1 and "exists already" in refused.stderr
    for bad, message in ((["Bad/usage/x"], "must be lowercase"), (["a/b/c", "--package", "elsewhere"],
                                                                   "not in PROCESSOR_PACKAGES")):
        result = cli("pipelines", "new", *bad, env=env)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_the_pipeline_json_schema_accepts_every_shipped_pipeline_and_refuses_a_typo() -> None:
    result = cli("pipelines", "schema")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    validator = jsonschema.Draft202012Validator(document)
    from convergence.paths import bundled_configs_dir
    from convergence.pipeline.validation import pipeline_files

    files = list(pipeline_files(bundled_configs_dir()))
    assert len(files) > 10
    for path in files:
        errors = list(validator.iter_errors(yaml.safe_load(path.read_text())))
        assert not errors, (path, errors[0].message)
    typo = yaml.safe_load((bundled_configs_dir() / "utility/smoke/noop.yml").read_text()) | {"timeout_minute": 1}
    assert any("timeout_minute" in e.message for e in validator.iter_errors(typo))


def test_format_and_json_cannot_contradict() -> None:
    result = cli("pipelines", "list", "--json", "--format", "table")
    assert result.returncode == 2 and "contradict" in result.stderr


def test_shell_completion_offers_pipeline_names() -> None:
    result = subprocess.run([sys.executable, "-m", "convergence"], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=60, env={**os.environ, "_CONVERGENCE_COMPLETE": "bash_complete",
                                             "COMP_WORDS": "convergence publish run acme utility/", "COMP_CWORD": "4"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["plain,utility/smoke/noop"]
