"""bench.results.records: the typed worker block and timing policy, read from every shape they were written in.

Both were free-form tables before they were typed; files written then must still read (through the strict
loader, bench.results.checks, and through bench.spec.codec.from_dict, which reads the worker's own file), and a
key no version ever wrote is refused, with its path.
"""

from __future__ import annotations

import json

import pytest

from bench.results.checks import ResultsInvalid, parse_results
from bench.results.records import CaseResult, TimingPolicy, WorkerInfo
from bench.results.store import load
from bench.spec.codec import from_dict, to_dict
from tests.conftest import REPO

FAILING = REPO / "tests" / "fixtures" / "results" / "failing"

# A worker block as the parent wrote it before start_method, fork_failed and memory_limit_bytes existed, for
# an error: no traceback_tail, no provenance. Keys and values as in tests/fixtures/results/failing.
OLD_ERROR_WORKER = {
    "pid": 4242,
    "returncode": -9,
    "timeout_s": 600,  # an integer there: read as a float
    "wall_s": 3.5,
    "cpu_s": 2.25,
    "log": "reports/run/cases/x.log",
    "log_tail": ["line 1", "line 2"],
}


def _case_dict(**changes) -> dict:
    case = to_dict(CaseResult("s[fp32-none]", "s", "s.toml", {"precision": "fp32"}, "error", "worker died"))
    case.pop("worker"), case.pop("timing_policy")  # absent, as in the oldest files
    case.update(changes)
    return case


def _results_dict(case: dict) -> dict:
    data = json.loads((FAILING / "results.json").read_text())
    data["cases"] = [case]
    return data


def test_an_old_worker_block_reads_through_both_readers():
    case = _case_dict(worker=OLD_ERROR_WORKER, timing_policy={})
    for result in (from_dict(CaseResult, case), parse_results(_results_dict(case)).cases[0]):
        w = result.worker
        assert isinstance(w, WorkerInfo)
        assert (w.pid, w.returncode, w.timeout_s, w.wall_s, w.cpu_s) == (4242, -9, 600.0, 3.5, 2.25)
        assert isinstance(w.timeout_s, float) and w.log_tail == ("line 1", "line 2")
        # Keys the old writer never wrote are None / empty, not made up.
        assert w.start_method is None and w.fork_failed is None and w.traceback_tail == ()
        assert result.timing_policy is None  # {}: "not recorded" in files of before


def test_a_missing_worker_block_and_timing_policy_read_as_empty():
    result = parse_results(_results_dict(_case_dict())).cases[0]
    assert result.worker == WorkerInfo() and result.timing_policy is None


def test_the_committed_fixtures_read_with_typed_blocks():
    results = load(FAILING)
    assert all(isinstance(c.worker, WorkerInfo) for c in results.cases)
    policies = {c.timing_policy for c in results.cases} - {None}
    assert policies and all(isinstance(p, TimingPolicy) for p in policies)
    # The fixture holds a case written with {} as its policy (an error before the timed calls).
    assert any(c.timing_policy is None for c in results.cases)


def test_a_full_worker_block_keeps_its_json_keys_on_the_round_trip():
    full = WorkerInfo(
        pid=1,
        returncode=0,
        timeout_s=60.0,
        wall_s=1.5,
        cpu_s=1.25,
        log="x.log",
        compile_cache="warm",
        start_method="fork",
        fork_failed=None,
        memory_limit_bytes=2**31,
        log_tail=(),
        traceback_tail=("Traceback",),
        finished_at_epoch_s=1.0,
        cpus=(0, 1),
        torch_threads=2,
        results_file="a/results.json",
        hostname="h",
        shard="1/2",
        job="4242_1",
    )
    written = to_dict(full)
    # The keys results files have always used (docs/results-schema.md), none renamed.
    assert set(written) == {
        "pid",
        "returncode",
        "timeout_s",
        "wall_s",
        "cpu_s",
        "log",
        "compile_cache",
        "start_method",
        "fork_failed",
        "memory_limit_bytes",
        "log_tail",
        "traceback_tail",
        "finished_at_epoch_s",
        "cpus",
        "torch_threads",
        "results_file",
        "hostname",
        "shard",
        "job",
    }
    case = _case_dict(worker=written, timing_policy=to_dict(TimingPolicy(2, 5, 0.5, 50)))
    again = parse_results(json.loads(json.dumps(_results_dict(case)))).cases[0]
    assert again.worker == full and again.timing_policy == TimingPolicy(2, 5, 0.5, 50)


@pytest.mark.parametrize("reader", ["from_dict", "parse_results"])
def test_control_an_unknown_worker_key_is_refused(reader):
    case = _case_dict(worker={**OLD_ERROR_WORKER, "colour": "red"})
    if reader == "from_dict":
        with pytest.raises(ValueError, match="WorkerInfo: unknown field.*colour"):
            from_dict(CaseResult, case)
    else:
        with pytest.raises(ResultsInvalid, match=r"cases\[0\]\.worker\.colour: unknown field of WorkerInfo"):
            parse_results(_results_dict(case))


def test_control_a_bad_worker_value_is_refused_with_its_path():
    case = _case_dict(worker={**OLD_ERROR_WORKER, "log_tail": "one string"})
    with pytest.raises(ResultsInvalid, match=r"cases\[0\]\.worker\.log_tail: expected a list"):
        parse_results(_results_dict(case))


def test_control_a_partial_timing_policy_is_refused():
    # Only {} means "not recorded"; a policy that lost a key is not a policy.
    policy = {"warmup": 2, "min_rounds": 5, "min_time_s": 0.5}
    with pytest.raises(ResultsInvalid, match=r"cases\[0\]\.timing_policy\.max_rounds: missing"):
        parse_results(_results_dict(_case_dict(timing_policy=policy)))


def test_merged_puts_in_only_what_the_other_block_knows():
    own = WorkerInfo(traceback_tail=("Traceback", "ValueError: x"), finished_at_epoch_s=5.0, pid=7)
    parent = WorkerInfo(pid=9, returncode=0, wall_s=2.0)
    merged = own.merged(parent)
    assert (merged.pid, merged.returncode, merged.wall_s) == (9, 0, 2.0)  # the parent's facts win
    assert merged.traceback_tail == own.traceback_tail and merged.finished_at_epoch_s == 5.0  # kept
    assert own.merged(WorkerInfo()) == own  # control: an empty block changes nothing
