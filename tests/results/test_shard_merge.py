"""Sharding (`--shard K/N`, `list --shard`) and `peft-bench merge`: shards partition a selection exactly, and
merge joins only files that are one run's parts.

The partition property is checked with hypothesis over scenario sets built by the real loader. Merge
refusals are checked on results records written to disk and loaded back, as the command reads them; one test
runs real shards through the CLI and merges them.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.errors import BenchInputError
from bench.results.records import CaseResult, Environment, Results, WorkerInfo
from bench.results.shards import Source, merge
from bench.results.store import load, save
from bench.scenario.loader import parse_scenario
from bench.spec.cases import Shard, expand_all
from bench.spec.schema import PRECISIONS
from tests.conftest import FAST_TIMING, LOAD_A, fixed_environment, scenario_toml

# Seconds a test here (workers, compiles, or a shared fixture that makes them): `nox -s slow` runs these.
pytestmark = pytest.mark.slow

# ---------------------------------------------------------------------------------------------------------
# Sharding


def _scenario(name: str, precision: list[str], compile_: list, hotswap_path: list[str]):
    data = {
        "scenario": {"name": name, "model": "builtin:tiny-llama"},
        "matrix": {"precision": precision, "compile": compile_, "hotswap_path": hotswap_path},
        "adapters": {"a": {"rank": 4, "alpha": 8, "seed": 1}},
        "steps": [{"op": "load_adapter", "adapter": "a"}, {"op": "forward"}],
    }
    return parse_scenario(data, f"<generated {name}>")


COMPILE_VALUES = [
    "none",
    "eager",
    "aot_eager",
    "inductor",
    {"backend": "inductor", "mode": "max-autotune", "fullgraph": True},
    {"backend": "inductor", "dynamic": False},
]


def _subset(values):
    return st.lists(st.sampled_from(range(len(values))), min_size=1, max_size=len(values), unique=True).map(
        lambda idx: [values[i] for i in sorted(idx)]
    )


scenario_sets = st.lists(
    st.tuples(_subset(list(PRECISIONS)), _subset(COMPILE_VALUES), _subset(["transformers", "peft"])),
    min_size=1,
    max_size=4,
).map(lambda specs: [_scenario(f"s{i}", *spec) for i, spec in enumerate(specs)])


def partition_problems(selection: list[str], shards: list[list[str]]) -> list[str]:
    """Why `shards` is not an exact, balanced partition of `selection` (empty when it is)."""
    problems = []
    flat = [cid for shard in shards for cid in shard]
    if sorted(flat) != sorted(selection):
        problems.append(f"union differs: {len(flat)} ids in shards, {len(selection)} selected")
    if len(flat) != len(set(flat)):
        problems.append("a case is in two shards")
    sizes = [len(s) for s in shards]
    if sizes and max(sizes) - min(sizes) > 1:
        problems.append(f"unbalanced shard sizes {sizes}")
    return problems


@settings(max_examples=60, deadline=None)
@given(scenarios=scenario_sets, count=st.integers(min_value=1, max_value=9), seed=st.randoms())
def test_shards_partition_any_selection_exactly(scenarios, count, seed):
    cases = expand_all(scenarios)
    ids = [c.id for c in cases]
    assert len(set(ids)) == len(ids)  # the precondition sharding relies on: ids are unique
    shards = [[c.id for c in Shard(k, count).select(cases)] for k in range(1, count + 1)]
    assert partition_problems(ids, shards) == []
    # Deterministic: every CI job computes the same shards whatever order it found the files in.
    shuffled = list(cases)
    seed.shuffle(shuffled)
    assert [[c.id for c in Shard(k, count).select(shuffled)] for k in range(1, count + 1)] == shards


def test_partition_check_catches_overlap_gap_and_imbalance():
    """Negative control: the property check above fails on shardings that are wrong."""
    ids = ["a", "b", "c", "d", "e"]
    assert partition_problems(ids, [["a", "b", "c"], ["d", "e"]]) == []
    assert "a case is in two shards" in partition_problems(ids, [["a", "b", "c"], ["c", "d", "e"]])
    assert any("union differs" in p for p in partition_problems(ids, [["a", "b"], ["d", "e"]]))
    assert any("unbalanced" in p for p in partition_problems(ids, [["a", "b", "c", "d"], ["e"]]))


@pytest.mark.parametrize("text", ["0/3", "4/3", "1/0", "a/b", "2", "-1/2"])
def test_bad_shard_is_input_error(text):
    with pytest.raises(BenchInputError, match="--shard"):
        Shard.parse(text)


def test_list_shards_of_the_scenarios_folder_partition_it(cli):
    full = cli("list", "scenarios")
    assert full.returncode == 0, full.stderr
    selection = full.stdout.split()
    assert len(selection) >= 3
    shards = []
    for k in range(1, 4):
        proc = cli("list", "scenarios", "--shard", f"{k}/3")
        assert proc.returncode == 0, proc.stderr
        shards.append(proc.stdout.split())
    assert partition_problems(selection, shards) == []
    bad = cli("list", "scenarios", "--shard", "4/3")
    assert bad.returncode == 2 and "K must be between 1 and N" in bad.stderr and "Traceback" not in bad.stderr


# ---------------------------------------------------------------------------------------------------------
# Merge, on results files


def _env(**changes) -> Environment:
    return fixed_environment(**changes)


def _case(case_id: str, verdict: str = "pass") -> CaseResult:
    return CaseResult(
        case_id=case_id,
        scenario=case_id.split("[")[0],
        scenario_file=f"scenarios/{case_id.split('[')[0]}.toml",
        params={"precision": "fp32", "compile": "none", "hotswap_path": "transformers"},
        verdict=verdict,
        reason="" if verdict == "pass" else "step 2 (forward): recompiles: expected == 0, got 1",
        worker=WorkerInfo(pid=1),
    )


SELECTION = [f"s{i}[fp32-none]" for i in range(7)]
SCENARIOS = tuple(sorted({cid.split("[")[0] for cid in SELECTION}))


def _results(
    case_ids, *, shard=None, scenario_set=SCENARIOS, env=None, suite_version="0.1.0", **kw
) -> Results:
    return Results(
        schema_version=1,
        suite_version=suite_version,
        created_at="2026-01-01T00:00:00+00:00",
        environment=env or _env(),
        scenario_set=scenario_set,
        cases=tuple(_case(c) for c in case_ids),
        shard=shard,
        parent_cpu_s=0.5,
        **kw,
    )


def _shard_ids(k: int, n: int) -> list[str]:
    return [cid for i, cid in enumerate(sorted(SELECTION)) if i % n == k - 1]


def _write(tmp_path, name: str, results: Results) -> Source:
    """Save and load back: merge sees what the command sees."""
    folder = tmp_path / name
    save(folder, results)
    return Source(str(folder / "results.json"), load(folder))


def _shards(tmp_path, n: int, **kw) -> list[Source]:
    return [
        _write(tmp_path, f"shard{k}", _results(_shard_ids(k, n), shard=f"{k}/{n}", **kw))
        for k in range(1, n + 1)
    ]


def test_shards_merge_into_the_whole_selection(tmp_path):
    sources = _shards(tmp_path, 3)
    merged = merge(list(reversed(sources)), command=("peft-bench", "merge"))
    assert sorted(c.case_id for c in merged.cases) == sorted(SELECTION)
    assert merged.shard is None and merged.scenario_set == SCENARIOS
    assert merged.parent_cpu_s == pytest.approx(1.5)
    # Each case says where it came from: the merged file has one environment block.
    assert {c.worker.shard for c in merged.cases} == {"1/3", "2/3", "3/3"}
    assert all(c.worker.results_file.endswith("results.json") and c.worker.pid == 1 for c in merged.cases)
    # The merged file round-trips through the results loader, so report, gate and compare can read it.
    save(tmp_path / "merged", merged)
    assert [c.case_id for c in load(tmp_path / "merged").cases] == [c.case_id for c in merged.cases]


def test_disjoint_unsharded_runs_of_one_scenario_set_merge(tmp_path):
    a = _write(tmp_path, "a", _results(SELECTION[:3]))
    b = _write(tmp_path, "b", _results(SELECTION[3:]))
    assert len(merge([a, b]).cases) == len(SELECTION)


def _refusal(sources) -> str:
    with pytest.raises(BenchInputError) as info:
        merge(sources)
    return str(info.value)


def test_refuses_different_suite_versions(tmp_path):
    a = _write(tmp_path, "a", _results(SELECTION[:3]))
    b = _write(tmp_path, "b", _results(SELECTION[3:], suite_version="0.2.0"))
    msg = _refusal([a, b])
    assert b.path in msg and "peft-bench 0.2.0" in msg and "different suite versions" in msg


def test_refuses_different_library_versions(tmp_path):
    other = _env(libraries={"torch": "2.13.0+cpu", "transformers": "5.24.0", "peft": "0.21.2"})
    a = _write(tmp_path, "a", _results(SELECTION[:3]))
    b = _write(tmp_path, "b", _results(SELECTION[3:], env=other))
    msg = _refusal([a, b])
    assert "transformers 5.24.0" in msg and "environment.libraries.transformers" in msg


def test_refuses_overlapping_cases(tmp_path):
    a = _write(tmp_path, "a", _results(SELECTION[:4]))
    b = _write(tmp_path, "b", _results(SELECTION[3:]))
    msg = _refusal([a, b])
    assert repr(SELECTION[3]) in msg and f"also in {a.path}" in msg and "overlap" in msg


def test_refuses_the_same_shard_twice(tmp_path):
    s1, s2 = _shards(tmp_path, 2)
    assert f"is shard 1/2, and so is {s1.path}" in _refusal([s1, s1, s2])


def test_refuses_different_scenario_sets(tmp_path):
    a = _write(tmp_path, "a", _results(SELECTION[:3]))
    b = _write(tmp_path, "b", _results(SELECTION[3:], scenario_set=("s3", "s4", "s5", "s6")))
    msg = _refusal([a, b])
    assert b.path in msg and "scenario_set" in msg and "unsharded runs merge only when" in msg
    # Two shards of different selections: the message speaks of shards, not of unsharded runs.
    s1 = _write(tmp_path, "s1", _results(_shard_ids(1, 2), shard="1/2"))
    s2 = _write(tmp_path, "s2", _results(_shard_ids(2, 2), shard="2/2", scenario_set=("s0", "s1")))
    msg = _refusal([s1, s2])
    assert "the shards of one selection select the same scenarios" in msg and "unsharded" not in msg


def test_refuses_a_missing_shard(tmp_path):
    s1, _, s3 = _shards(tmp_path, 3)
    msg = _refusal([s1, s3])
    assert "missing shard(s) 2/3" in msg


def _slurm(task: int, *, array="4242", base=1, count=3, script="/home/u/run_array.sbatch") -> dict[str, str]:
    facts = {
        "kind": "slurm",
        "array_job_id": array,
        "array_task_id": str(task),
        "job_id": f"{array}_{task}",
        "shard_base": str(base),
        "shard_count": str(count),
        "submit_dir": "/home/u/work dir",
    }
    return {**facts, "script": script} if script else facts


def _slurm_shards(tmp_path, n: int, base: int = 1, **kw) -> list[Source]:
    return [
        _write(
            tmp_path,
            f"shard{k}",
            _results(
                _shard_ids(k, n), shard=f"{k}/{n}", scheduler=_slurm(base + k - 1, base=base, count=n, **kw)
            ),
        )
        for k in range(1, n + 1)
    ]


def test_a_missing_slurm_shard_names_its_task_and_the_sbatch_command_that_reruns_only_it(tmp_path):
    s1, _, _, s4 = _slurm_shards(tmp_path, 4)  # --array=1-4: shards 2 and 3 are tasks 2 and 3
    msg = _refusal([s1, s4])
    assert "missing shard(s) 2/4, 3/4" in msg
    assert "Slurm array job 4242: task(s) 2,3 (job 4242_2, 4242_3) wrote no results" in msg
    assert (
        "to rerun only them: cd '/home/u/work dir' && sbatch --array=2,3 "
        "--export=ALL,PEFT_BENCH_SHARD_COUNT=4,PEFT_BENCH_SHARD_BASE=1,PEFT_BENCH_RESUME=1 /home/u/run_array.sbatch"
    ) in msg


def test_a_missing_slurm_shard_without_the_script_says_how_to_have_it_named(tmp_path):
    s1, _ = _slurm_shards(tmp_path, 2, base=0, script=None)
    msg = _refusal([s1])
    assert "task(s) 1 (job 4242_1)" in msg and "PEFT_BENCH_SLURM_SCRIPT" in msg


def test_a_missing_github_or_kubernetes_shard_says_how_to_rerun_it(tmp_path):
    gh = {"kind": "github", "run_id": "99", "job": "shard", "repository": "o/r", "job_id": "99/shard[0]"}
    s1 = _write(tmp_path, "gh1", _results(_shard_ids(1, 2), shard="1/2", scheduler=gh))
    msg = _refusal([s1])
    assert "matrix job index(es) 1" in msg and "gh run rerun 99 --failed --repo o/r" in msg
    k8s = {"kind": "kubernetes", "completion_index": "0", "shard_count": "2", "job_id": "bench-0-abc"}
    k1 = _write(tmp_path, "k1", _results(_shard_ids(1, 2), shard="1/2", scheduler=k8s))
    assert "completion index(es) 1" in _refusal([k1])


def test_merged_cases_name_the_scheduler_job_that_ran_them(tmp_path):
    merged = merge(_slurm_shards(tmp_path, 3))
    assert {c.worker.shard: c.worker.job for c in merged.cases} == {
        "1/3": "4242_1",
        "2/3": "4242_2",
        "3/3": "4242_3",
    }
    save(tmp_path / "merged", merged)
    assert {c.worker.job for c in load(tmp_path / "merged").cases} == {"4242_1", "4242_2", "4242_3"}


def test_refuses_shards_of_different_counts(tmp_path):
    s1_of_2 = _shards(tmp_path / "two", 2)[0]
    _, s2_of_3, s3_of_3 = _shards(tmp_path / "three", 3)
    msg = _refusal([s1_of_2, s2_of_3, s3_of_3])
    assert "share N" in msg


def test_refuses_shards_and_unsharded_runs_together(tmp_path):
    s1, s2 = _shards(tmp_path, 2)
    plain = _write(tmp_path, "plain", _results(["other[fp32-none]"]))
    assert "not both" in _refusal([s1, s2, plain])


def test_refuses_shards_of_different_selections(tmp_path):
    """Shard 2/2 from another selection: all shards present, no overlap, but the ids are not a round-robin
    share of the union."""
    s1 = _write(tmp_path, "s1", _results(_shard_ids(1, 2), shard="1/2"))
    alien = _write(tmp_path, "s2", _results(["s0[bf16-none]", "s9[fp32-none]"], shard="2/2"))
    msg = _refusal([s1, alien])
    assert "not shards of one selection" in msg


def _fingerprinted(tmp_path, selection: list[str], sha: str, k: int, n: int, name: str, **kw) -> Source:
    ids = [cid for i, cid in enumerate(sorted(selection)) if i % n == k - 1]
    results = _results(ids, shard=f"{k}/{n}", selection_cases=len(selection), selection_sha256=sha, **kw)
    return _write(tmp_path, name, results)


def test_refuses_shards_whose_selections_differ_though_their_ids_fit(tmp_path):
    """Shard 1/2 selected 5 cases, shard 2/2 (the scenario file grown by two precisions, or another -k) 7:
    their ids still fit one round-robin, and the merge lost a case without a word. Control: the same ids
    with one fingerprint merge, and the merged file keeps it."""
    tmp = tmp_path
    five, seven = SELECTION[:5], SELECTION
    s1 = _fingerprinted(tmp, five, "a" * 64, 1, 2, "s1")
    s2 = _fingerprinted(tmp, seven, "b" * 64, 2, 2, "s2")
    assert sorted(c.case_id for c in s1.results.cases + s2.results.cases) != sorted(seven)  # fits, lacks one
    msg = _refusal([s1, s2])
    assert "selected other cases" in msg and "rerun every shard from one selection" in msg and s2.path in msg
    # The same selection, edited between the jobs: same ids and count, other contents.
    t1 = _fingerprinted(tmp, seven, "c" * 64, 1, 2, "t1")
    t2 = _fingerprinted(tmp, seven, "d" * 64, 2, 2, "t2")
    assert "other scenario contents" in _refusal([t1, t2])
    # Control: one selection, one fingerprint.
    u1 = _fingerprinted(tmp, seven, "c" * 64, 1, 2, "u1")
    merged = merge([u1, _fingerprinted(tmp, seven, "c" * 64, 2, 2, "u2")])
    assert (merged.selection_cases, merged.selection_sha256) == (7, "c" * 64)


def test_refuses_shards_that_hold_fewer_cases_than_their_selection(tmp_path):
    s1 = _fingerprinted(tmp_path, SELECTION, "e" * 64, 1, 2, "s1")
    short = _results(_shard_ids(2, 2)[:-1], shard="2/2", selection_cases=7, selection_sha256="e" * 64)
    msg = _refusal([s1, _write(tmp_path, "s2", short)])
    assert "hold 6 cases, but their selection had 7" in msg


def test_refuses_files_of_different_jobs_and_keeps_the_common_one(tmp_path):
    """The merged file dropped `jobs` (1), so compare read timings of --jobs 2 shards as absolute against a
    --jobs 1 baseline; mixed --jobs were accepted. Control: shards of one --jobs keep it."""
    a = _write(tmp_path, "a", _results(_shard_ids(1, 2), shard="1/2", jobs=2))
    b = _write(tmp_path, "b", _results(_shard_ids(2, 2), shard="2/2", jobs=1))
    assert "ran 1 case(s) at a time, but" in _refusal([a, b])
    c = _write(tmp_path, "c", _results(_shard_ids(2, 2), shard="2/2", jobs=2))
    assert merge([a, c]).jobs == 2


def test_refuses_files_run_with_other_options(tmp_path):
    from bench.results.records import RunSettings

    strict, lax = RunSettings(require_oracles=True, worker="fork"), RunSettings(worker="fork")
    a = _write(tmp_path, "a", _results(_shard_ids(1, 2), shard="1/2", options=strict))
    b = _write(tmp_path, "b", _results(_shard_ids(2, 2), shard="2/2", options=lax))
    assert "ran with other options" in _refusal([a, b]) and "require_oracles" in _refusal([a, b])
    c = _write(tmp_path, "c", _results(_shard_ids(2, 2), shard="2/2", options=strict))
    assert merge([a, c]).options == strict


def test_the_merged_file_started_when_its_earliest_file_did(tmp_path):
    """created_at is when the run started: a merge wrote its own time, and the site ordered runs by it."""
    a = _write(tmp_path, "a", replace(_results(SELECTION[:3]), created_at="2026-01-02T10:00:00+00:00"))
    b = _write(tmp_path, "b", replace(_results(SELECTION[3:]), created_at="2026-01-02T10:30:00+01:00"))
    assert merge([a, b]).created_at == "2026-01-02T10:30:00+01:00"  # 09:30 UTC: the earlier
    assert merge([a, b], created_at="2030-01-01T00:00:00+00:00").created_at.startswith("2030")


# ---------------------------------------------------------------------------------------------------------
# The real thing: shards run through the CLI, then merged


TWO_CASES = scenario_toml(
    "shard-e2e",
    [LOAD_A, "forward"],
    matrix={"compile": ["none"], "hotswap_path": ["transformers", "peft"]},
    timing=FAST_TIMING,
    adapters={"a": {"rank": 4, "alpha": 8, "seed": 1}},
)


@pytest.mark.slow
def test_cli_shards_then_merge(tmp_path, write_scenario, cache_root, cli):
    path = write_scenario(TWO_CASES, "two.toml")
    env = {"PEFT_BENCH_CACHE": str(cache_root)}
    outs = []
    # A shard that selects no case is refused (issue 15): 3 shards over 2 cases, shard 3/3 exits 2.
    empty = cli("run", path, "--shard", "3/3", "--out", tmp_path / "shard3", env=env)
    assert empty.returncode == 2 and "no case selected" in empty.stderr
    for k in (1, 2):
        out = tmp_path / f"shard{k}"
        proc = cli("run", path, "--shard", f"{k}/2", "--out", out, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        data = json.loads((out / "results.json").read_text())
        assert data["shard"] == f"{k}/2" and data["scenario_set"] == ["shard-e2e"]
        outs.append(out)
    assert [len(load(o).cases) for o in outs] == [1, 1]
    merged = tmp_path / "merged"
    proc = cli("merge", merged, *outs, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "merged 2 file(s), 2 case(s)" in proc.stdout
    results = load(merged)
    assert sorted(c.case_id for c in results.cases) == [
        "shard-e2e[fp32-none-peft]",
        "shard-e2e[fp32-none-transformers]",
    ]
    assert all(c.verdict == "pass" for c in results.cases)
    assert (merged / "summary.md").is_file() and (merged / "results.csv").is_file()
    # Refusals through the CLI: exit 2, the message, no traceback.
    missing = cli("merge", tmp_path / "partial", outs[0], env=env)
    assert missing.returncode == 2 and "missing shard(s) 2/2" in missing.stderr
    assert "Traceback" not in missing.stderr
    into_input = cli("merge", outs[0], outs[0], outs[1], env=env)
    assert into_input.returncode == 2 and "both an input and the output" in into_input.stderr


# ---------------------------------------------------------------------------------------------------------
# Where merge writes (issue 32): another run's folder, a run still going


def _merge(*args) -> tuple[int, str, str]:
    import contextlib
    import io

    from bench.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["merge", *map(str, args)])
    return code, out.getvalue(), err.getvalue()


def _another_run(folder, case_ids=("old[fp32-none]",)):
    save(folder, _results(list(case_ids), scenario_set=("old",)))
    (folder / "summary.md").write_text("old summary\n")
    (folder / "cases").mkdir()
    (folder / "cases" / "old_fp32-none.log").write_text("old log\n")
    return folder


def test_merge_refuses_a_folder_holding_another_runs_results(tmp_path):
    s1, s2 = _shards(tmp_path, 2)
    out = _another_run(tmp_path / "out")
    before = (out / "results.json").read_bytes()
    code, _, err = _merge(out, s1.path, s2.path)
    assert code == 2, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("peft-bench: error:") and str(out) in line and "--overwrite" in line
    assert "Traceback" not in err
    assert (out / "results.json").read_bytes() == before  # nothing replaced


def test_merge_overwrite_replaces_the_old_run_entirely(tmp_path):
    s1, s2 = _shards(tmp_path, 2)
    out = _another_run(tmp_path / "out")
    code, stdout, err = _merge(out, s1.path, s2.path, "--overwrite")
    assert code == 0, err
    assert sorted(c.case_id for c in load(out).cases) == sorted(SELECTION)
    # The old run's case files are gone: no stale log beside the merged results.
    assert not (out / "cases").exists()
    assert "old summary" not in (out / "summary.md").read_text()


def test_merge_refuses_the_folder_of_a_run_still_going(tmp_path):
    from bench.runner.lock import folder_lock

    s1, s2 = _shards(tmp_path, 2)
    out = tmp_path / "running"
    with folder_lock(out):  # a run in progress holds it
        code, _, err = _merge(out, s1.path, s2.path)
        assert code == 2, err
        assert "another peft-bench run" in err and str(out) in err
        assert not (out / "results.json").exists()
        # Not even with --overwrite: the run would write over the merged file.
        code, _, err = _merge(out, s1.path, s2.path, "--overwrite")
        assert code == 2 and not (out / "results.json").exists()
    # Control: the run ended, the folder is free.
    code, _, err = _merge(out, s1.path, s2.path)
    assert code == 0, err
