"""`convergence validate` finds each kind of bad config, lists them all, and passes on configs/."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from convergence.cli import _add_command_groups, cli
from convergence.pipeline import ProcessorRegistry
from convergence.pipeline.validation import validate_tree

REGISTRY = ProcessorRegistry(package="tests.fake_processors")
HEADER = "pipeline_id: p-{name}\nname: {name}\nsteps:\n"
STEP = "  - step_id: {sid}\n    ps_type: {ps}\n"

BAD = {
    "unknown_key": (HEADER + STEP + "    retries: 2\n", "unknown key"),
    "bad_yaml": ("pipeline_id: [unclosed\n", "invalid YAML"),
    "cycle": (
        HEADER
        + STEP.replace("{sid}", "a")
        + "    depends_on: b\n"
        + STEP.replace("{sid}", "b")
        + "    depends_on: a\n",
        "dependency cycle",
    ),
    "self_dependency": (HEADER + STEP + "    depends_on: s1\n", "depends on itself"),
    "unknown_dependency": (HEADER + STEP + "    depends_on: ghost\n", "unknown step 'ghost'"),
    "duplicate_step": (HEADER + STEP + STEP, "duplicate step_id"),
    "unknown_ps_type": (HEADER + STEP.replace("{ps}", "nowhere.nothing"), "unknown ps_type 'nowhere.nothing'"),
    "missing_schema_file": (
        HEADER
        + STEP
        + "    config:\n      schema_file: '{schema_dir}/missing.json'\n"
        + "variables:\n  schema_dir: configs/demo/schemas\n",
        "file not found: configs/demo/schemas/missing.json",
    ),
    "path_escape": (HEADER + STEP + "    config:\n      sql_file: ../../etc/passwd\n", "points outside the project"),
}


def write_pipeline(root: Path, name: str, text: str) -> Path:
    path = root / "configs" / "demo" / f"{name}.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = text.replace("{name}", name.replace("_", "-")).replace("{sid}", "s1").replace("{ps}", "sample.sleep")
    path.write_text(text)
    return path


@pytest.mark.parametrize("kind", sorted(BAD))
def test_each_kind_of_bad_config_is_caught(tmp_path, kind):
    text, expected = BAD[kind]
    write_pipeline(tmp_path, kind, text)
    count, problems = validate_tree(tmp_path / "configs", REGISTRY)
    assert count == 1
    assert any(expected in str(p) for p in problems), [str(p) for p in problems]
    assert all(f"configs/demo/{kind}.yml" in str(p) for p in problems)


def test_good_config_has_no_problems(tmp_path):
    write_pipeline(tmp_path, "good", HEADER + STEP)
    assert validate_tree(tmp_path / "configs", REGISTRY) == (1, [])


def test_cli_lists_every_problem_and_exits_non_zero(tmp_path):
    for kind, (text, _) in BAD.items():
        write_pipeline(tmp_path, kind, text)
    _add_command_groups()
    result = CliRunner().invoke(cli, ["validate", str(tmp_path / "configs")])
    assert result.exit_code == 1
    for kind in BAD:
        assert f"configs/demo/{kind}.yml" in result.output
    assert f"in {len(BAD)} pipeline(s)" in result.output


def test_cli_accepts_the_shipped_configs():
    _add_command_groups()
    result = CliRunner().invoke(cli, ["validate"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: ")
