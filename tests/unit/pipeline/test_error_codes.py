"""The step error catalogue: one enum, values equal to their names (run-log rows and events keep them),
and no code spelled as a string literal in the processors or the toolkit."""

from __future__ import annotations

import ast
from pathlib import Path

from convergence.pipeline.errors import ErrorCode, PermanentStepError, invalid
from tests.paths import REPO_ROOT

ROOT = REPO_ROOT
_CATALOGUE = "convergence/pipeline/errors.py"


def test_values_are_the_names():
    assert all(code.value == code.name for code in ErrorCode)
    assert ErrorCode("CONFIG_INVALID") is ErrorCode.CONFIG_INVALID


def test_invalid_is_a_permanent_error_with_the_code():
    error = invalid("bad write_mode")
    assert isinstance(error, PermanentStepError) and not error.retryable
    assert error.code == "CONFIG_INVALID"
    assert invalid("bad date", ErrorCode.INVALID_PARAMETERS, field="start_date").code == "INVALID_PARAMETERS"
    assert invalid("x", ErrorCode.INVALID_PARAMETERS, field="d").details == {"field": "d"}


def _code_literals(path: Path) -> list[str]:
    """Every string literal that is exactly an error code, wherever it is passed (keyword or positional)."""
    codes = {code.value for code in ErrorCode}
    return [f"{node.lineno}: {node.value}" for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in codes]


def test_code_literal_scan_sees_keyword_and_positional_codes(tmp_path):
    module = tmp_path / "step.py"
    module.write_text('raise invalid("bad row", "PROVIDER_BAD_RESPONSE")\n'
                      'raise PermanentStepError("x", code="FOCUS_NONCONFORMANT")\n'
                      'raise invalid("fine", ErrorCode.CONFIG_INVALID)  # "CONFIG_INVALID" in a comment\n')
    assert _code_literals(module) == ["1: PROVIDER_BAD_RESPONSE", "2: FOCUS_NONCONFORMANT"]


def test_no_code_literals_in_processors_or_toolkit():
    files = [*ROOT.glob("processors/**/*.py"), *ROOT.glob("convergence/extractors/*.py"),
             *ROOT.glob("convergence/pipeline/*.py"), *ROOT.glob("convergence/httpclient/*.py")]
    assert len(files) > 30
    found = []
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        if rel == _CATALOGUE:
            continue
        found += [f"{rel}:{literal}" for literal in _code_literals(path)]
    assert found == []
