"""The JSON Schema of results.json (bench.results.json_schema, docs/results.schema.json): up to date with the
records, valid as a schema, every real results file valid against it, and broken documents refused."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest

from bench.results.json_schema import results_schema, schema_text
from tests.conftest import REPO

SHIPPED = REPO / "docs/results.schema.json"
REAL = sorted(REPO.glob("reports/**/results.json")) + sorted(
    REPO.glob("tests/fixtures/results/*/results.json")
)


@pytest.fixture(scope="module")
def validator():
    schema = results_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_shipped_schema_is_the_codes():
    assert SHIPPED.read_text(encoding="utf-8") == schema_text(), (
        "docs/results.schema.json is out of date: python -m bench schema --out docs/results.schema.json"
    )


def test_the_schema_command_prints_it(cli, tmp_path):
    res = cli("schema")
    assert res.returncode == 0 and json.loads(res.stdout) == results_schema()
    assert cli("schema", "--out", tmp_path / "s.json").returncode == 0
    assert (tmp_path / "s.json").read_text() == schema_text()


@pytest.mark.parametrize("path", REAL, ids=lambda p: str(p.relative_to(REPO)))
def test_every_real_results_file_is_valid(validator, path):
    errors = [
        f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(json.loads(path.read_text()))
    ]
    assert errors == []


def _broken(doc: dict, how: str) -> dict:
    doc = copy.deepcopy(doc)
    case = doc["cases"][0]
    if how == "verdict":
        case["verdict"] = "maybe"
    elif how == "unknown field":
        doc["environment"]["colour"] = "blue"
    elif how == "missing field":
        del doc["environment"]["cpu"]
    elif how == "wrong type":
        doc["cases"][0]["steps"][0]["index"] = "one"
    elif how == "step status":
        doc["cases"][0]["steps"][0]["status"] = "fine"
    elif how == "timing policy":
        case["timing_policy"] = {"warmup": 1}
    return doc


@pytest.mark.parametrize(
    "how", ["verdict", "unknown field", "missing field", "wrong type", "step status", "timing policy"]
)
def test_control_a_broken_document_is_refused(validator, how):
    doc = json.loads((REPO / "reports/baseline/results.json").read_text())
    assert validator.is_valid(doc)
    assert not validator.is_valid(_broken(doc, how))


def test_an_empty_timing_policy_of_older_files_is_accepted(validator):
    doc = json.loads((REPO / "reports/baseline/results.json").read_text())
    doc["cases"][0]["timing_policy"] = {}
    assert validator.is_valid(doc)
