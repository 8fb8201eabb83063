"""compare and gate from the columnar copy's `judge` column (bench.results.judging): the same findings, the
same output and exit codes as from the full records, on real results files; the reduced path really is the
one used while the copy matches, and a stale or older copy falls back to the records."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from bench.cli.main import main
from bench.judge.compare import compare
from bench.judge.figures import is_hotswap
from bench.judge.gate import decide
from bench.ops import op_named
from bench.results import columnar
from bench.results.judging import CaseView
from bench.results.records import CaseResult, Outcome
from bench.results.store import load, load_for_judging, save

REPO = Path(__file__).resolve().parents[2]
BASELINE = REPO / "reports" / "baseline" / "results.json"
FIXTURES = REPO / "tests" / "fixtures" / "results"


def _saved(src: Path, folder: Path, changed=None) -> Path:
    """`src` loaded (and changed by `changed`) and saved into `folder`: results.json and its columnar copy."""
    results = load(src)
    save(folder, changed(results) if changed else results)
    return folder / "results.json"


def _scaled(step, factor: float):
    if step.timing is None:
        return step
    samples = tuple(x * factor for x in step.timing.samples_ms)
    return dataclasses.replace(step, timing=dataclasses.replace(step.timing, samples_ms=samples))


def _modified(results, known: str = "bug-a", wrong_swaps: bool = False):
    """Slower and faster timings, a changed verdict, more recompiles, more memory, a slower swap, a step not
    run, an xfail on a known failure (`known`), a step and a case missing; the first case's compile counts
    dropped (so its first plain load is the reload its swap is held against); with `wrong_swaps`, the
    swaps' outputs of every other case do not match."""
    out = []
    for n, c in enumerate(results.cases[:-1]):  # the last case is missing
        steps = []
        for s in c.steps:
            s = _scaled(s, 1.8 if n % 2 == 0 else 0.5)
            if s.compile is not None and n == 1:
                s = dataclasses.replace(
                    s, compile=dataclasses.replace(s.compile, recompiles=s.compile.recompiles + 2)
                )
            if s.memory is not None and s.memory.rss_peak_bytes is not None and n == 2:
                s = dataclasses.replace(
                    s, memory=dataclasses.replace(s.memory, rss_peak_bytes=s.memory.rss_peak_bytes * 2)
                )
            if s.op_time_ms is not None and n == 3:
                s = dataclasses.replace(s, op_time_ms=s.op_time_ms * 3)
            if s.output is not None and n % 2 == 0 and wrong_swaps and is_hotswap(s):
                s = dataclasses.replace(s, output=dataclasses.replace(s.output, matches=False))
            if n == 0 and op_named(s.op).compiles:
                s = dataclasses.replace(s, compile=None)
            if s.timing is not None and n == 2 and s.index == first_timed(c):
                s = dataclasses.replace(s, status="not_run")
            steps.append(s)
        changed = dataclasses.replace(c, steps=tuple(steps), verdict="fail" if n == 0 else c.verdict)
        if n == 1:
            xfail = Outcome("known_failure", "fail", "fail", False, "xfail", known_failure=known)
            changed = dataclasses.replace(changed, verdict="xfail", scenario_outcomes=(xfail,))
        if n == 3:  # a step fewer: the steps no longer align, so the case totals are compared
            graph_breaks = None if c.total_graph_breaks is None else c.total_graph_breaks + 1
            changed = dataclasses.replace(changed, steps=changed.steps[:-1], total_graph_breaks=graph_breaks)
        out.append(changed)
    return dataclasses.replace(results, cases=tuple(out))


def first_timed(case) -> int | None:
    return next((s.index for s in case.steps if s.timing is not None), None)


def _known_b(results):
    return _modified(results, known="bug-b", wrong_swaps=True)


NOISE_A, NOISE_B = FIXTURES / "noise-a" / "results.json", FIXTURES / "noise-b" / "results.json"
FAILING, TRAIN = FIXTURES / "failing" / "results.json", FIXTURES / "train" / "results.json"
# (name, baseline file, its change, current file, its change)
PAIRS = [
    ("baseline", BASELINE, None, BASELINE, None),
    ("baseline-modified", BASELINE, None, BASELINE, _modified),
    ("modified-baseline", BASELINE, _modified, BASELINE, None),
    ("modified-known-failure", BASELINE, _modified, BASELINE, _known_b),
    ("noise", NOISE_A, None, NOISE_B, None),
    ("failing", BASELINE, None, FAILING, None),
    ("failing-modified", FAILING, None, FAILING, _modified),
    ("train", TRAIN, None, TRAIN, _modified),
    ("fixtures", NOISE_A, None, FAILING, None),
]
IDS = [p[0] for p in PAIRS]


def _pair(tmp_path, base_src, base_change, cur_src, cur_change):
    return _saved(base_src, tmp_path / "a", base_change), _saved(cur_src, tmp_path / "b", cur_change)


@pytest.mark.parametrize("timing", ["auto", "absolute", "ratio"])
@pytest.mark.parametrize("pair", PAIRS, ids=IDS)
def test_findings_from_the_judge_column_equal_those_from_the_records(tmp_path, pair, timing):
    a, b = _pair(tmp_path, *pair[1:])
    full = compare(load(a), load(b), timing=timing)
    fast_a, fast_b = load_for_judging(a), load_for_judging(b)
    assert all(isinstance(c, CaseView) for c in (*fast_a.cases, *fast_b.cases))  # the reduced path ran
    fast = compare(fast_a, fast_b, timing=timing)
    assert fast.findings == full.findings
    assert fast == full
    assert decide(fast, "cmd") == decide(full, "cmd")
    assert len(full.findings) > len(load(a).cases)  # step metrics were judged, not only verdicts


def test_the_modified_copy_has_findings_of_every_kind(tmp_path):
    # Negative control for the equality above: the modified pair is not a trivial one.
    a, b = _pair(tmp_path, BASELINE, None, BASELINE, _modified)
    statuses = {
        f.status for f in compare(load_for_judging(a), load_for_judging(b), timing="absolute").findings
    }
    assert {"regression", "missing", "improvement"} <= statuses
    assert main(["gate", str(b), "--baseline", str(a)]) == 1
    a, b = _pair(tmp_path / "known", BASELINE, _modified, BASELINE, _known_b)
    by_metric = {
        f.metric: f
        for f in compare(load(a), load(b), timing="ratio").findings
        if f.case_id == load(a).cases[0].case_id
    }
    assert (
        by_metric["switch_over_reload"].baseline is not None
        and by_metric["switch_over_reload"].current is None
    )


def _cli(capsys, argv) -> tuple[int, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("pair", PAIRS, ids=IDS)
def test_gate_and_compare_print_and_exit_the_same_without_the_columnar_copy(tmp_path, capsys, pair):
    a, b = _pair(tmp_path, *pair[1:])
    commands = (["gate", str(b), "--baseline", str(a), "--all"], ["compare", str(a), str(b), "--all"])
    with_copy = [_cli(capsys, argv) for argv in commands]
    for folder in (a.parent, b.parent):
        os.unlink(folder / columnar.COLUMNAR_FILE)
    assert isinstance(load_for_judging(a).cases[0], CaseResult)  # now the records are read
    without = [_cli(capsys, argv) for argv in commands]
    assert with_copy == without
    assert with_copy[0][1] or with_copy[0][2]  # something was printed


def _doctored_copy(folder: Path, verdict: str, keep_judge: bool = True) -> None:
    """Rewrite folder's columnar copy (matching fingerprint) with every case's verdict in `judge` changed."""
    doc = json.loads((folder / "results.json").read_text())
    cases = doc.pop("cases")
    marked = [{**c, "verdict": verdict} for c in cases]
    # `record` keeps the true data; only the reduced data is doctored, so a read shows which column was used.
    columnar.write(folder, doc, ((m, json.dumps(c)) for m, c in zip(marked, cases, strict=True)))
    if not keep_judge:
        import pyarrow.parquet as pq

        path = folder / columnar.COLUMNAR_FILE
        # The copy's header and fingerprint are the file's key-value metadata (columnar.Sink.finish): kept.
        meta = {k: v for k, v in pq.read_metadata(path).metadata.items() if k != b"ARROW:schema"}
        pq.write_table(pq.read_table(path).drop(["judge"]).replace_schema_metadata(meta), path)


def test_gate_reads_the_judge_column_while_it_matches(tmp_path, capsys):
    a = _saved(BASELINE, tmp_path / "a")
    b = _saved(BASELINE, tmp_path / "b")
    assert main(["gate", str(b), "--baseline", str(a)]) == 0
    _doctored_copy(b.parent, "fail")  # the judge column says every case failed; results.json does not
    assert {c.verdict for c in load_for_judging(b).cases} == {"fail"}
    assert {c.verdict for c in load(b).cases} != {"fail"}
    assert main(["gate", str(b), "--baseline", str(a)]) == 1  # so the gate read the judge column
    capsys.readouterr()


def test_a_stale_copy_falls_back_to_the_records(tmp_path, capsys):
    a = _saved(BASELINE, tmp_path / "a")
    b = _saved(BASELINE, tmp_path / "b")
    _doctored_copy(b.parent, "fail")
    with open(b, "a", encoding="utf-8") as f:
        f.write("\n")  # results.json changed after the copy was written: the copy no longer matches
    cases = load_for_judging(b).cases
    assert all(isinstance(c, CaseResult) for c in cases) and {c.verdict for c in cases} != {"fail"}
    assert main(["gate", str(b), "--baseline", str(a)]) == 0
    capsys.readouterr()


def test_a_copy_without_the_judge_column_falls_back_to_the_records(tmp_path, capsys):
    a = _saved(BASELINE, tmp_path / "a")
    b = _saved(BASELINE, tmp_path / "b")
    _doctored_copy(b.parent, "fail", keep_judge=False)
    assert columnar.read(b) is not None  # the copy itself still matches: only its judge column is gone
    cases = load_for_judging(b).cases
    assert all(isinstance(c, CaseResult) for c in cases) and {c.verdict for c in cases} != {"fail"}
    assert main(["gate", str(b), "--baseline", str(a)]) == 0
    capsys.readouterr()


def test_the_u_tests_plain_python_ranks_equal_numpys_bit_for_bit():
    # The rank sums moved from numpy.unique to plain Python (bench.results.stats): the same figures, exactly,
    # on samples with and without ties, ints among floats, and signed zeros.
    import random

    from bench.results.stats import _numpy_rank_sums, _rank_sums

    rng = random.Random(0)
    draws = (
        lambda: rng.random() * 10,
        lambda: float(rng.randint(1, 6)),
        lambda: rng.randint(1, 8),
        lambda: rng.choice([1, 1.0, 2, 2.5, -0.0, 0.0, 3]),
        lambda: round(rng.lognormvariate(0, 1), 2),
    )
    for i in range(3000):
        draw = draws[i % len(draws)]
        x = [draw() for _ in range(rng.randint(5, 60))]
        y = [draw() for _ in range(rng.randint(5, 60))]
        assert _rank_sums(x, y) == _numpy_rank_sums(x, y)
    # Negative control: the comparison sees a difference of one tie.
    assert _rank_sums([1.0, 2.0, 3.0], [3.0, 4.0]) != _rank_sums([1.0, 2.0, 3.0], [3.5, 4.0])
