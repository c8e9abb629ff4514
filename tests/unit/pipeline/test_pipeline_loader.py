"""Loader: path mapping, traversal refusal, YAML errors with field path and line."""

from pathlib import Path

import pytest

from convergence.pipeline import ConfigError, PipelineLoader, PipelineNotFound, PipelineRef
from convergence.pipeline.errors import InvalidPipelineRef
from convergence.pipeline.loader import parse_pipeline
from tests.paths import REPO_ROOT

GOOD = """\
pipeline_id: demo-pipe
name: Demo
steps:
  - step_id: one
    ps_type: sample.sleep
"""


@pytest.fixture
def configs(tmp_path: Path) -> Path:
    (tmp_path / "configs" / "anthropic").mkdir(parents=True)
    (tmp_path / "configs" / "anthropic" / "usage_cost.yml").write_text(GOOD)
    (tmp_path / "configs" / "openai" / "cost").mkdir(parents=True)
    (tmp_path / "configs" / "openai" / "cost" / "usage_cost.yml").write_text(GOOD)
    (tmp_path / "secret.yml").write_text(GOOD)
    return tmp_path / "configs"


def test_three_segment_path_maps_to_file(configs):
    loader = PipelineLoader(configs)
    assert loader.path_for("openai/cost/usage_cost") == configs.resolve() / "openai/cost/usage_cost.yml"
    assert loader.load("openai/cost/usage_cost").pipeline_id == "demo-pipe"


def test_empty_domain_maps_to_provider_folder(configs):
    loader = PipelineLoader(configs)
    assert loader.path_for("anthropic//usage_cost") == configs.resolve() / "anthropic/usage_cost.yml"
    assert loader.load("anthropic//usage_cost").name == "Demo"


@pytest.mark.parametrize("bad", [
    "../x/secret", "openai/../../secret", "openai/cost/..", "/etc/passwd/x", "openai/cost/%2e%2e",
    "openai/%2e%2e/secret", "OpenAI/cost/usage_cost", "openai/cost/Usage", "openai/cost", "a/b/c/d",
    "openai/cost/usage cost", "openai/cost/usage_cost.yml", "//usage", "openai\\..\\x/a/b", "", "a/b/" + "x" * 300,
])
def test_traversal_and_malformed_paths_are_refused(configs, bad):
    with pytest.raises(InvalidPipelineRef) as caught:
        PipelineLoader(configs).load(bad)
    assert "pipeline path" in str(caught.value)


def test_unknown_pipeline_is_its_own_error(configs):
    with pytest.raises(PipelineNotFound, match="unknown pipeline openai/cost/nope"):
        PipelineLoader(configs).load("openai/cost/nope")


@pytest.mark.parametrize("ref", ["setup/bootstrap/config", "setup//plans"])
def test_platform_data_files_are_not_pipelines(ref):
    # The repository's own configs: these files exist, hold platform data and must never load as a pipeline.
    configs = REPO_ROOT / "configs"
    loader = PipelineLoader(configs)
    assert loader.path_for(ref).is_file()
    with pytest.raises(PipelineNotFound, match="platform data, not a pipeline"):
        loader.load(ref)


def test_ref_round_trip():
    assert str(PipelineRef.parse("anthropic//usage_cost")) == "anthropic//usage_cost"


def test_unknown_key_names_file_path_and_line():
    text = GOOD + "    retries: 3\n"
    with pytest.raises(ConfigError) as caught:
        parse_pipeline(text, file="configs/x.yml")
    problem = caught.value.problems[0]
    assert problem.path == "steps.0.retries"
    assert problem.line == 6
    assert str(problem) == "configs/x.yml:6 [steps.0.retries]: unknown key"


def test_bad_yaml_reports_line():
    with pytest.raises(ConfigError) as caught:
        parse_pipeline("pipeline_id: x\nsteps: [\n  - a: b\n", file="f.yml")
    assert "invalid YAML" in str(caught.value)
    assert caught.value.problems[0].line is not None


def test_all_problems_are_listed():
    text = "pipeline_id: p1\nname: n\ntimeout_minutes: -1\nsteps:\n  - step_id: Bad-Id\n    ps_type: nodot\n"
    with pytest.raises(ConfigError) as caught:
        parse_pipeline(text, file="f.yml")
    paths = {p.path for p in caught.value.problems}
    assert {"timeout_minutes", "steps.0.step_id", "steps.0.ps_type"} <= paths


def test_depends_on_accepts_a_string_or_a_list():
    text = GOOD + "  - step_id: two\n    ps_type: sample.sleep\n    depends_on: one\n"
    config = parse_pipeline(text)
    assert config.step("two").depends_on == ["one"]
    assert config.step("one").timeout_minutes == 10 and config.timeout_minutes == 30


@pytest.mark.parametrize(("extra", "message"), [
    ("  - step_id: one\n    ps_type: sample.sleep\n", "duplicate step_id 'one'"),
    ("  - step_id: two\n    ps_type: sample.sleep\n    depends_on: two\n", "depends on itself"),
    ("  - step_id: two\n    ps_type: sample.sleep\n    depends_on: ghost\n", "unknown step 'ghost'"),
])
def test_structural_errors(extra, message):
    with pytest.raises(ConfigError, match=message):
        parse_pipeline(GOOD + extra)


def test_cycle_message_shows_the_loop():
    text = ("pipeline_id: p1\nname: n\nsteps:\n"
            "  - {step_id: a, ps_type: x.y, depends_on: c}\n"
            "  - {step_id: b, ps_type: x.y, depends_on: a}\n"
            "  - {step_id: c, ps_type: x.y, depends_on: b}\n")
    with pytest.raises(ConfigError, match=r"dependency cycle: a -> c -> b -> a"):
        parse_pipeline(text)


def test_schedule_is_validated():
    text = GOOD + "schedule: {type: weekly, time: '25:00', timezone: Mars/Olympus}\n"
    with pytest.raises(ConfigError) as caught:
        parse_pipeline(text)
    assert {p.path for p in caught.value.problems} == {"schedule.type", "schedule.time", "schedule.timezone"}
