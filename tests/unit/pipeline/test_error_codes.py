"""The step error catalogue: one enum, values equal to their names (run-log rows and events keep them),
and no code spelled as a string literal in the processors, the toolkit or anywhere else in the service."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from convergence.api.errors import ApiErrorCode
from convergence.consumer.outcome import OutcomeCode
from convergence.pipeline.errors import ErrorCode, PermanentStepError, invalid
from convergence.schemas.errors import RejectCode
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


# Outside the processors a code is also passed to an outcome, an HTTP error or a rejection, each named
# by its own catalogue (ErrorCode, RejectCode, OutcomeCode, ApiErrorCode): no str constant may stand
# where a code goes. The fake providers of the devstack answer with the third parties' own codes.
_SERVICE_PACKAGES = ("consumer", "convergence", "publisher", "schemas")
_THIRD_PARTY_FAKES = "convergence/devstack/providers/"
_CODE_SHAPED = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
_ERROR_CALLEES = re.compile(r".*(?:Error|Rejected)|invalid")


def _is_code_name(name: str | None) -> bool:
    return name is not None and (name == "code" or name.endswith("_code"))


def _target_name(node: ast.expr) -> str | None:
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None


def _str_constant(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def _literal_codes_passed(source: str) -> list[str]:
    """Str constants given as a code: a `code=`/`*_code=` argument, an assignment to such a name, a
    code-shaped positional argument of an error's constructor, or a comparison with a `.code`."""
    values: list[ast.expr] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            values += [kw.value for kw in node.keywords if _is_code_name(kw.arg)]
            if _ERROR_CALLEES.fullmatch(_target_name(node.func) or ""):
                values += [arg for arg in node.args
                           if _str_constant(arg) and _CODE_SHAPED.fullmatch(arg.value)]  # type: ignore[attr-defined]
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                    values += [value for name, value in zip(target.elts, node.value.elts, strict=False)
                               if _is_code_name(_target_name(name))]
                elif _is_code_name(_target_name(target)) and node.value is not None:
                    values.append(node.value)
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(_is_code_name(_target_name(side)) for side in sides):
                values += sides
    literals = sorted((value for value in values if _str_constant(value)), key=lambda value: value.lineno)
    return [f"{value.lineno}: {value.value}" for value in literals]  # type: ignore[attr-defined]


def test_service_code_scan_sees_each_way_a_code_is_given():
    source = ('Outcome(kind, code="DUPLICATE_RUN")\n'
              'raise ApiError(404, "RUN_NOT_FOUND", "no such run")\n'
              'class Missing(LookupError):\n    code = "CREDENTIAL_NOT_FOUND"\n'
              'status, error_code = "FAILED", "DEAD_LETTERED"\n'
              'if error.code == "PROCEDURE_NOT_FOUND": pass\n'
              'record(error_code="X")\n')
    assert _literal_codes_passed(source) == ["1: DUPLICATE_RUN", "2: RUN_NOT_FOUND", "4: CREDENTIAL_NOT_FOUND",
                                             "5: DEAD_LETTERED", "6: PROCEDURE_NOT_FOUND", "7: X"]


def test_service_code_scan_leaves_other_upper_case_strings_alone():
    source = ('os.environ.get("CA_ROOT_API_KEY")\n'
              'query("SELECT STATUS FROM RUNS", job_config=None)\n'
              'raise ApiError(400, ApiErrorCode.INVALID_JSON, "request body is not valid JSON")\n'
              'audit(org, "API_KEY_CREATED", resource_type="api_key")\n'
              'if status == "DEAD_LETTERED": pass\n'
              'STATUSES = ("RUNNING", "DEAD_LETTERED")\n'
              'code = ErrorCode.CONFIG_INVALID\n')
    assert _literal_codes_passed(source) == []


def test_every_catalogue_spells_its_values_as_their_names():
    for catalogue in (ErrorCode, RejectCode, OutcomeCode, ApiErrorCode):
        assert [code.value for code in catalogue] == [code.name for code in catalogue]
    assert OutcomeCode("ALREADY_SUCCEEDED") is OutcomeCode.ALREADY_SUCCEEDED
    assert ApiErrorCode("API_KEY_INVALID") is ApiErrorCode.API_KEY_INVALID


def test_no_code_literals_in_the_service():
    files = [path for package in _SERVICE_PACKAGES for path in (ROOT / package).rglob("*.py")]
    assert len(files) > 100
    found = []
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        if not rel.startswith(_THIRD_PARTY_FAKES):
            found += [f"{rel}:{literal}" for literal in _literal_codes_passed(path.read_text(encoding="utf-8"))]
    assert found == []
