"""bench.runner.saving: a running run rewrites its results file after every case while a write is cheap, and
keeps the writes to a bounded share of its time once they are not (each write is the whole file, so writing
after every case grows with the square of the cases)."""

from __future__ import annotations

import pytest

from bench.results.store import load
from bench.runner import run as run_module
from bench.runner.launch import RunOptions
from bench.runner.saving import SaveClock, SavePolicy, save_due
from bench.scenario import load_scenarios
from bench.spec.cases import expand_all
from tests.runner.test_interrupt_resume import _scenario


def test_the_first_write_is_due_and_a_later_one_after_its_cost_over_the_share():
    policy = SavePolicy(share=0.02)
    assert save_due(policy, float("inf"), 0.0)  # nothing written yet
    assert not save_due(policy, 4.9, 0.1)  # 0.1 s writes: one every 5 s at most
    assert save_due(policy, 5.0, 0.1)
    assert save_due(policy, 0.0, 0.0)  # a write that took no time never holds the next one back


class _Run:
    """A run on a fake clock: each case takes `case_s`, each write `write_s_per_case` per finished case (the
    whole file is written each time)."""

    def __init__(self, case_s: float, write_s_per_case: float):
        self.now = 0.0
        self.case_s, self.write_s_per_case = case_s, write_s_per_case
        self.finished = 0
        self.writing_s = 0.0
        self.held = 0  # cases in the file as last written

    def write(self) -> None:
        cost = self.finished * self.write_s_per_case
        self.now += cost
        self.writing_s += cost
        self.held = self.finished

    def go(self, cases: int, finish) -> None:
        for _ in range(cases):
            self.now += self.case_s
            self.finished += 1
            finish(self.write)
        self.write()  # the run's final write: always


def _clocked(run: _Run, policy: SavePolicy) -> SaveClock:
    return SaveClock(policy=policy, clock=lambda: run.now)


def test_cheap_writes_still_follow_every_case():
    run = _Run(case_s=5.0, write_s_per_case=0.001)  # 100 cases: the file's last write 0.1 s
    clock = _clocked(run, SavePolicy(share=0.02))
    held_after_each = []

    def finish(write):
        clock.maybe(write)
        held_after_each.append(run.held)

    run.go(100, finish)
    assert held_after_each == list(range(1, 101)) and clock.deferred == 0


@pytest.mark.parametrize("cases", [1_000, 20_000])
def test_writes_stay_a_bounded_share_of_a_large_run(cases):
    share = 0.02
    run = _Run(case_s=0.5, write_s_per_case=0.002)  # 20,000 cases: a 40 s write at the end
    clock = _clocked(run, SavePolicy(share=share))
    run.go(cases, clock.maybe)
    final = cases * run.write_s_per_case
    cases_s = cases * run.case_s
    # Every write but the final one waited 1 / share of its predecessor's cost, and costs grow: the writes
    # during the run take at most about share of it (plus the last one's growth since the one before).
    assert run.writing_s - final <= 2 * share * (cases_s + run.writing_s)
    assert run.held == cases  # the final write holds every case
    assert clock.written < cases and clock.deferred == cases - clock.written


def test_negative_control_writing_after_every_case_grows_with_the_square():
    """What the policy bounds: a clock that is always due writes after every case, and at 1,000 cases its
    writes take longer than the cases themselves, far past the share the test above allows."""
    run = _Run(case_s=0.5, write_s_per_case=0.002)
    always = SaveClock(policy=SavePolicy(share=float("inf")), clock=lambda: run.now)
    run.go(1_000, always.maybe)
    assert always.deferred == 0
    assert run.writing_s - 1_000 * run.write_s_per_case > 2 * 0.02 * (1_000 * run.case_s + run.writing_s)
    assert run.writing_s > 1_000 * run.case_s


@pytest.mark.slow
@pytest.mark.parametrize("share, held", [(float("inf"), [1, 2, 3]), (1e-9, [1, 1, 1])])
def test_a_run_writes_its_results_through_the_clock(tmp_path, cache_root, monkeypatch, share, held):
    """Real workers, three quick cases: with a clock always due the file holds each case as it finishes; with
    one that waits for ever after the first write, it still holds one case after the third, and the final
    write holds all three (the run itself, not only the clock, decides by the policy)."""
    paths = []
    for name in ("s1", "s2", "s3"):
        path = tmp_path / f"{name}.toml"
        path.write_text(_scenario(name))
        paths.append(path)
    out = tmp_path / "out"
    monkeypatch.setattr(run_module, "SaveClock", lambda: SaveClock(policy=SavePolicy(share=share)))
    seen = []

    def progress(event, i, n, case, result, elapsed_s):
        if event == "done":
            seen.append(sum(c.verdict != "not_run" for c in load(out).cases))

    results = run_module.run_cases(
        expand_all(load_scenarios(paths)), RunOptions(out_dir=out, cache_root=cache_root), progress=progress
    )
    assert seen == held
    assert [c.verdict for c in results.cases] == ["pass"] * 3
    assert [c.verdict for c in load(out).cases] == ["pass"] * 3 and not load(out).interrupted
