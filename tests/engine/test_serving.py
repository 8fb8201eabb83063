"""Serving replay (bench/engine/serving, the serve op): the stream, the virtual-time queue, the strategies, and the
per-response check with its negative controls (a planted wrong swap, a planted library bug)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from bench.engine.serving.figures import percentile
from bench.engine.serving.replay import replay
from bench.engine.serving.strategies import STRATEGIES
from bench.engine.serving.stream import Request, checked_ids, make_stream, popularity, warmup_ids
from bench.errors import ScenarioError
from bench.ops import OPS
from bench.scenario import load_scenario
from bench.spec.cases import expand, selection_size
from bench.spec.schema import SERVING_STRATEGIES, ServeSpec
from bench.worker.execute import run_case
from tests.conftest import scenario_toml

QV = ["q_proj", "v_proj"]
SERVE_STEP = {
    "op": "serve",
    "adapters": ["fam"],
    "requests": 12,
    "prompts": 3,
    "concurrency": 2,
    "batch_size": 2,
    "max_wait_ms": 0,
}


def _serve_toml(
    strategy: str | list[str] = "side_by_side",
    *,
    compile="none",
    path: str | list[str] = "peft",
    kind="forward",
    alphas=(16,),
    adapters=None,
    steps=(SERVE_STEP,),
) -> str:
    """A family of three rank-8 adapters served by `strategy` (one name or several: the matrix axis)."""
    family = {"count": 3, "ranks": [8], "alphas": list(alphas), "targets": QV, "seed": 10}
    return scenario_toml(
        "serve-test",
        steps,
        scenario={"timeout_s": 300},
        matrix={
            "precision": ["fp32"],
            "compile": [compile],
            "strategy": [strategy] if isinstance(strategy, str) else strategy,
            "hotswap_path": [path] if isinstance(path, str) else path,
        },
        tables={"workload": {"kind": kind, "seq_len": 8, "new_tokens": 3}},
        adapters={"fam": family} if adapters is None else adapters,
    )


def _serve(write_scenario, *, extra="", **kwargs):
    return load_scenario(write_scenario(_serve_toml(**kwargs) + extra))


def _record(result):
    (step,) = result.steps
    return step, step.serving


# ----- the stream and the queue: pure


def test_the_stream_is_a_pure_function_of_its_seed():
    spec = ServeSpec(adapters=("a", "b", "c"), requests=50, popularity="zipf", seed=3)
    assert make_stream(spec) == make_stream(spec)
    assert make_stream(spec) != make_stream(ServeSpec(adapters=("a", "b", "c"), requests=50, seed=4))


def test_zipf_makes_the_first_adapter_the_most_popular_and_uniform_does_not():
    zipf = popularity(ServeSpec(adapters=("a", "b", "c", "d"), popularity="zipf", zipf_s=1.0))
    assert zipf == pytest.approx([1 / x / (1 + 1 / 2 + 1 / 3 + 1 / 4) for x in (1, 2, 3, 4)])
    counts = {}
    for r in make_stream(
        ServeSpec(adapters=("a", "b", "c", "d"), requests=4000, popularity="zipf", zipf_s=1.0)
    ):
        counts[r.adapter] = counts.get(r.adapter, 0) + 1
    assert counts["a"] > counts["b"] > counts["c"] > counts["d"]
    assert popularity(ServeSpec(adapters=("a", "b"))) == [0.5, 0.5]


def test_poisson_arrivals_have_the_asked_rate():
    stream = make_stream(ServeSpec(adapters=("a",), requests=4000, arrival="poisson", rate_rps=50.0, seed=1))
    gaps = [b.arrival_ms - a.arrival_ms for a, b in zip(stream, stream[1:], strict=False)]
    assert all(g >= 0 for g in gaps)
    assert 1000.0 / (sum(gaps) / len(gaps)) == pytest.approx(50.0, rel=0.05)


def test_a_sample_per_adapter_is_seeded_and_covers_every_adapter():
    spec = ServeSpec(adapters=("a", "b", "c"), requests=60, check_per_adapter=2, seed=5)
    stream = make_stream(spec)
    ids = checked_ids(stream, spec)
    assert ids == checked_ids(stream, spec)
    by_adapter = {}
    for r in stream:
        if r.id in ids:
            by_adapter[r.adapter] = by_adapter.get(r.adapter, 0) + 1
    assert by_adapter == {"a": 2, "b": 2, "c": 2}
    assert checked_ids(stream, ServeSpec(adapters=("a", "b", "c"), requests=60)) == {r.id for r in stream}


def test_warmup_is_the_first_requests_and_each_adapters_first():
    stream = tuple(Request(i, a, 0, None) for i, a in enumerate("aabacb"))
    assert warmup_ids(stream, ServeSpec(adapters=("a", "b", "c"), warmup_requests=1)) == {0, 2, 4}
    assert warmup_ids(stream, ServeSpec(adapters=("a", "b", "c"), warmup_requests=3)) == {0, 1, 2, 4}


def test_open_loop_latency_includes_queueing():
    # Arrivals every 10 ms, each service 25 ms: request i waits for the ones before it.
    stream = [Request(i, "a", 0, 10.0 * i) for i in range(4)]
    served = replay(stream, lambda batch: 25.0)
    assert [s.finish_ms - s.arrival_ms for s in served] == [25.0, 40.0, 55.0, 70.0]
    # A server faster than the arrivals idles: latency is the service time alone.
    served = replay(stream, lambda batch: 5.0)
    assert [s.finish_ms - s.arrival_ms for s in served] == [5.0] * 4


def test_closed_loop_clients_send_when_their_previous_request_finished():
    stream = [Request(i, "a", 0, None) for i in range(6)]
    served = replay(stream, lambda batch: 10.0, concurrency=2)
    # Two clients, one server: each request waits for the other client's one.
    assert [s.arrival_ms for s in served] == [0.0, 0.0, 10.0, 20.0, 30.0, 40.0]
    assert [s.finish_ms for s in served] == [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]


def test_batches_wait_up_to_max_wait_for_known_arrivals_and_no_longer():
    stream = [Request(0, "a", 0, 0.0), Request(1, "b", 0, 3.0), Request(2, "c", 0, 50.0)]
    sizes = []
    replay(stream, lambda batch: sizes.append(len(batch)) or 1.0, batch_size=2, max_wait_ms=5.0)
    assert sizes == [2, 1]  # 0 and 1 together (1 came within 5 ms); 2 came too late to wait for
    sizes.clear()
    replay(stream, lambda batch: sizes.append(len(batch)) or 1.0, batch_size=2, max_wait_ms=1.0)
    assert sizes == [1, 1, 1]


def test_percentile_interpolates_like_numpy():
    values = sorted([1.0, 2.0, 3.0, 4.0, 10.0])
    assert percentile(values, 50) == 3.0
    assert percentile(values, 90) == pytest.approx(7.6)
    assert percentile([5.0], 99) == 5.0


def test_every_strategy_of_the_schema_has_an_implementation():
    assert tuple(STRATEGIES) == SERVING_STRATEGIES


# ----- the scenario format


def test_the_strategy_axis_expands_and_only_hotswap_varies_with_the_path(write_scenario):
    s = _serve(write_scenario, strategy=["hotswap", "side_by_side", "reload"], path=["peft", "transformers"])
    ids = [c.id for c in expand(s)]
    assert ids == [
        "serve-test[fp32-none-hotswap-peft]",
        "serve-test[fp32-none-hotswap-transformers]",
        "serve-test[fp32-none-side_by_side]",
        "serve-test[fp32-none-reload]",
    ]
    assert selection_size([s]) == len(ids)


def test_a_family_expands_to_its_members(write_scenario):
    s = _serve(write_scenario, alphas=(16, 32))
    assert [(a.key, a.alpha, a.seed) for a in s.adapters] == [
        ("fam0", 16.0, 10),
        ("fam1", 32.0, 11),
        ("fam2", 16.0, 12),
    ]
    assert s.steps[0].serve.adapters == ("fam0", "fam1", "fam2")


@pytest.mark.parametrize(
    "change, field, message",
    [
        (("requests = 12", "requests = 0"), "requests", "between"),
        (('adapters = ["fam"]', 'adapters = ["nope"]'), "adapters[0]", "not defined"),
        (("max_wait_ms = 0", 'max_wait_ms = 0\narrival = "poisson"'), "rate_rps", "needs rate_rps"),
        (('strategy = ["side_by_side"]', 'strategy = ["sidebyside"]'), "strategy[0]", "did you mean"),
        (("count = 3", "count = 0"), "count", "between"),
        (("ranks = [8]", "ranks = [0]"), "ranks[0]", "positive"),
    ],
)
def test_bad_serving_input_names_the_field(write_scenario, change, field, message):
    text = _serve_toml()
    with pytest.raises(ScenarioError) as err:
        load_scenario(write_scenario(text.replace(*change)))
    assert field in str(err.value) and message in str(err.value)


def test_serve_must_be_the_only_step_and_the_axis_needs_a_serve_step(write_scenario):
    with pytest.raises(ScenarioError, match="only step"):
        load_scenario(write_scenario(_serve_toml(steps=[SERVE_STEP, "forward"])))
    plain = _serve_toml(adapters={"one": {"rank": 8, "targets": QV, "seed": 10}}, steps=["forward"])
    with pytest.raises(ScenarioError, match="strategy axis needs a serve step"):
        load_scenario(write_scenario(plain))


def test_serving_expectations_are_refused_on_other_ops(write_scenario):
    text = scenario_toml(
        "x", [{"op": "forward", "expect": {"wrong_responses": "== 0"}}], matrix=None, adapters={}
    )
    with pytest.raises(ScenarioError, match="only a serve step"):
        load_scenario(write_scenario(text))


def test_serve_declares_what_it_decides():
    assert {"wrong_responses", "recompiles_after_warmup", "oracles_agree"} <= OPS["serve"].produces


# ----- real runs (tiny model, eager: seconds each)


@pytest.fixture(scope="module")
def eager_runs(cache_root, tmp_path_factory):
    """One real eager case per strategy (tiny model: seconds each), shared by the tests below."""
    folder = tmp_path_factory.mktemp("serving")
    out = {}
    for strategy in SERVING_STRATEGIES:
        path = folder / f"{strategy}.toml"
        path.write_text(_serve_toml(strategy, alphas=(16, 32)))
        case = expand(load_scenario(path))[0]
        out[strategy] = replace(
            run_case(case, cache_root), case=case.to_dict()
        )  # as bench.runner.run keeps it
    return out


@pytest.mark.parametrize("strategy", SERVING_STRATEGIES)
def test_each_strategy_serves_every_request_right(eager_runs, strategy):
    r = eager_runs[strategy]
    step, sv = _record(r)
    assert r.verdict == "pass", r.reason
    assert len(sv.requests) == 12 and all(q.checked and q.matches for q in sv.requests)
    f = sv.figures
    assert f.wrong_responses == 0 and f.checked_responses == 12
    assert f.latency_ms_p50 <= f.latency_ms_p90 <= f.latency_ms_p99 <= f.latency_ms_max
    assert f.throughput_rps > 0 and f.rss_peak_bytes > 0
    agreement = sv.oracle_agreement
    assert set(agreement) == {q.adapter for q in sv.requests} and all(a.agree for a in agreement.values())
    assert step.timing.n == 12  # per-request latencies: what the gate compares
    if strategy == "mixed_batch":
        assert f.switches == 0 and max(q.batch for q in sv.requests) < 11  # two clients: some batches of 2
    else:
        assert f.switches >= 1
    if r.device == "cpu":
        assert "cuda_allocated_after_bytes" in sv.unavailable  # said, not a made-up 0
    else:
        assert f.cuda_allocated_after_bytes > 0 and "cuda_allocated_after_bytes" not in sv.unavailable


def test_the_report_compares_the_strategies_in_one_table_with_a_figure(eager_runs, tmp_path):
    from bench.report.build import write_reports
    from bench.results.environment import collect
    from bench.results.flat_rows import rows
    from bench.results.records import Results

    results = Results(1, "test", "now", collect(), ("serve-test",), tuple(eager_runs.values()))
    write_reports(results, tmp_path)
    md = (tmp_path / "report.md").read_text()
    section = md.split("## Serving replay", 1)[1].split("\n## ", 1)[0]
    for strategy in SERVING_STRATEGIES:
        assert f"| `serve-test[fp32-none-{strategy}" in section
    assert "| 0 / 12 | pass |" in section  # wrong / checked and the verdict lead, after case and strategy
    # What checking cost beside what serving cost and the setup before it, per strategy (ServingRecord.check_s /
    # serve_s + ServingFigures.setup_ms).
    assert "| check / serve + setup s |" in section
    sv = eager_runs["reload"].steps[0].serving
    setup_s = sv.figures.setup_ms / 1000
    assert (
        f"| {sv.check_s:.3g} / {sv.serve_s:.3g} + {setup_s:.3g} | none |" in section
    )  # then the compile setting
    html = (tmp_path / "report.html").read_text()
    serving_html = html.split('id="serving"', 1)[1].split("<h2", 1)[0]
    assert "data:image/png" in serving_html  # the CDF / timeline / memory figure
    metrics = {r["metric"] for r in rows(results) if r["strategy"] == "reload"}
    assert {"serving_latency_ms_p99", "serving_wrong_responses", "serving_switches"} <= metrics


def test_a_generated_adapter_built_on_the_meta_device_equals_one_built_on_the_loaded_model(
    cache_root, tmp_path
):
    """The oracle for the meta build: the same seeded draws written onto a really loaded base model."""
    import torch
    from peft import get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from bench.engine.sources.adapters import _build, peft_config
    from bench.engine.sources.models import resolve_model
    from bench.spec.schema import AdapterSpec

    spec = AdapterSpec(key="m", rank=4, alpha=8, targets=("q_proj", "v_proj", "down_proj"), seed=7)
    base_location = resolve_model("builtin:tiny-llama", cache_root).location
    _build(spec, base_location, tmp_path / "meta", False, False)
    loaded = get_peft_model(AutoModelForCausalLM.from_pretrained(base_location), peft_config(spec))
    gen = torch.Generator().manual_seed(spec.seed)
    with torch.no_grad():
        for name, param in sorted(loaded.named_parameters()):
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * spec.init_std)
    loaded.save_pretrained(tmp_path / "loaded")
    a = load_file(tmp_path / "meta" / "adapter_model.safetensors")
    b = load_file(tmp_path / "loaded" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_planted_wrong_swap_for_one_adapter_fails_naming_it_and_its_requests(
    cache_root, write_scenario, monkeypatch
):
    """Negative control: the hotswap path swaps in fam1 with its B scaled by 1.5 (a silent wrong swap)."""
    import bench.engine.hotswap as hotswap
    from bench.engine.sources.adapters import resolve_adapter
    from bench.engine.sources.models import resolve_model

    s = _serve(write_scenario, strategy="hotswap")
    case = expand(s)[0]
    model = resolve_model(s.model, cache_root)
    fam1 = resolve_adapter(s.adapter("fam1"), model, cache_root).location
    real = hotswap.PeftPath.swap

    def planted(self, subject, location, name):
        real(self, subject, location, name)
        if location == fam1:
            for n, p in subject.model.named_parameters():
                if "lora_B" in n and "q_proj" in n:
                    p.data.mul_(1.5)

    monkeypatch.setattr(hotswap.PeftPath, "swap", planted)
    r = run_case(case, cache_root)
    step, sv = _record(r)
    assert r.verdict == "fail"
    wrong = [q for q in sv.requests if q.matches is False]
    assert wrong and {q.adapter for q in wrong} == {"fam1"}
    (o,) = [o for o in step.outcomes if o.expectation == "wrong_responses"]
    assert o.status == "fail" and f"request {wrong[0].id} (fam1" in o.message
    # The other adapters' responses are still right: the check is per response, not per case.
    assert all(q.matches for q in sv.requests if q.adapter != "fam1")


def test_transformers_hotswap_keeps_the_old_alpha_and_serving_catches_it(cache_root, write_scenario):
    """The upstream bug (transformers 5.23): a swap to a different alpha answers wrongly, silently."""
    s = _serve(write_scenario, strategy="hotswap", path="transformers", alphas=(16, 32))
    r = run_case(expand(s)[0], cache_root)
    _, sv = _record(r)
    assert r.verdict == "fail"
    wrong_adapters = {q.adapter for q in sv.requests if q.matches is False}
    first_alpha = {"fam0": 16, "fam1": 32, "fam2": 16}[sv.requests[0].adapter]
    assert wrong_adapters == {k for k, a in {"fam0": 16, "fam1": 32, "fam2": 16}.items() if a != first_alpha}


def test_a_library_bug_shared_by_the_subject_and_the_reference_fails_on_the_math(
    cache_root, write_scenario, monkeypatch
):
    """Negative control for oracles_agree: peft loads every adapter with double scaling, on both sides."""
    from peft.tuners.lora.layer import LoraLayer

    real = LoraLayer.update_layer

    def buggy(self, adapter_name, r, lora_alpha, *args, **kwargs):
        return real(self, adapter_name, r, 2 * lora_alpha, *args, **kwargs)

    monkeypatch.setattr(LoraLayer, "update_layer", buggy)
    r = run_case(expand(_serve(write_scenario, strategy="side_by_side"))[0], cache_root)
    step, sv = _record(r)
    assert sv.figures.wrong_responses == 0  # the library reference shares the bug
    (o,) = [o for o in step.outcomes if o.expectation == "oracles_agree"]
    assert o.status == "fail" and r.verdict == "fail"


def test_generate_responses_are_checked_on_tokens_and_logits(cache_root, write_scenario):
    r = run_case(expand(_serve(write_scenario, strategy="mixed_batch", kind="generate"))[0], cache_root)
    _, sv = _record(r)
    assert r.verdict == "pass", r.reason
    assert all(q.mismatched_tokens == 0 and q.max_abs_diff is not None for q in sv.requests)
    assert "greedy tokens" in sv.check_rule


@pytest.mark.slow
def test_compiled_serving_counts_recompiles_after_warmup(cache_root, write_scenario):
    s = _serve(
        write_scenario,
        strategy="side_by_side",
        compile="aot_eager",
        extra='expect = { recompiles_after_warmup = "== 0" }\n',
    )
    r = run_case(expand(s)[0], cache_root)
    step, sv = _record(r)
    assert sv.figures.frame_compiles_total >= 1
    names = [o.expectation for o in step.outcomes]
    assert "compile_effective" in names and "recompiles_after_warmup" in names
    assert not math.isnan(sv.figures.latency_ms_p50)


def _with_faster_than(result, pairs):
    import copy

    case = copy.deepcopy(result.case)
    case["scenario"]["steps"][0]["expect"]["faster_than"] = [list(p) for p in pairs]
    return replace(result, case=case)


def test_faster_than_is_decided_across_the_cases_of_one_run(eager_runs):
    from bench.judge.relative import relative_outcomes

    p50 = {k: r.steps[0].serving.figures.latency_ms_p50 for k, r in eager_runs.items()}
    mine = _with_faster_than(eager_runs["mixed_batch"], [("reload", 1000.0), ("side_by_side", 1e-6)])
    cases = (mine, eager_runs["reload"], eager_runs["side_by_side"])
    judged = dict(zip(("mixed_batch", "reload", "side_by_side"), relative_outcomes(cases), strict=True))
    outs = [o for o in judged["mixed_batch"].steps[0].outcomes if o.expectation == "faster_than"]
    assert [o.held for o in outs] == [p50["mixed_batch"] < 1000 * p50["reload"], False]
    # Negative control: an impossible factor fails the case, naming the other case.
    assert judged["mixed_batch"].verdict == "fail" and "side_by_side" in judged["mixed_batch"].reason
    assert judged["reload"] is eager_runs["reload"]  # cases without the expectation are left alone
    # Applied twice (every save re-decides): the same outcomes, not doubled.
    again = relative_outcomes(tuple(relative_outcomes(cases)))
    assert [o.expectation for o in again[0].steps[0].outcomes].count("faster_than") == 2


@pytest.mark.parametrize("holds", [True, False])
def test_faster_than_markers_are_scoped_with_the_recorded_host_facts(eager_runs, holds):
    """The parent decides faster_than from the handed case: its host-scoped markers must be scoped with the
    facts the worker recorded (bench.spec.host), as the worker's own were. An impossible factor is an xfail only
    where the marker's fact held."""
    from bench.judge.relative import relative_outcomes

    mine = _with_faster_than(eager_runs["mixed_batch"], [("reload", 1e-6)])
    mine.case["scenario"]["steps"][0]["known_failures"] = [
        {"expectation": "faster_than", "reason": "planted", "when": [], "host": ["bnb_cpu_packs_4bit"]}
    ]
    mine = replace(mine, host_facts={"bnb_cpu_packs_4bit": holds})
    judged, _ = relative_outcomes((mine, eager_runs["reload"]))
    (o,) = [o for o in judged.steps[0].outcomes if o.expectation == "faster_than"]
    assert o.status == ("xfail" if holds else "fail")


def test_faster_than_without_its_sibling_is_not_evaluated_never_a_pass(eager_runs):
    from bench.judge.relative import relative_outcomes

    (alone,) = relative_outcomes((_with_faster_than(eager_runs["mixed_batch"], [("reload", 1000.0)]),))
    step = alone.steps[0]
    assert not [o for o in step.outcomes if o.expectation == "faster_than"]
    assert any("faster_than reload: not evaluated" in n for n in step.notes)


def test_faster_than_must_name_a_strategy_of_the_matrix(write_scenario):
    text = _serve_toml()
    with pytest.raises(ScenarioError, match="not a strategy of the matrix"):
        load_scenario(write_scenario(text + "expect = { faster_than = { reload = 1.0 } }\n"))
    with pytest.raises(ScenarioError, match="unknown strategy"):
        load_scenario(write_scenario(text + "expect = { faster_than = { reloda = 1.0 } }\n"))


@pytest.mark.parametrize("requests, refused", [(1, True), (4, True), (5, False)])
def test_faster_than_needs_enough_requests_for_its_interval(write_scenario, requests, refused):
    """A stream too short for the confidence interval could never decide faster_than: refused when the file is
    read, naming the step. Control: MIN_SAMPLES requests load."""
    text = _serve_toml(["side_by_side", "reload"], steps=({**SERVE_STEP, "requests": requests},))
    path = write_scenario(text + "expect = { faster_than = { reload = 1.0 } }\n")
    if refused:
        with pytest.raises(
            ScenarioError, match=f"needs at least 5 requests \\(requests = {requests}\\)"
        ) as e:
            load_scenario(path)
        assert "step 1 (serve)" in str(e.value) and str(path) in str(e.value)
    else:
        assert load_scenario(path).steps[0].expect.faster_than == (("reload", 1.0),)


@pytest.mark.parametrize(
    "name, published",
    # The parameter counts the two checkpoints publish (tied embeddings counted once).
    [("smollm2-135m-shape", 134_515_008), ("qwen2.5-0.5b-shape", 494_032_768)],
)
def test_the_realistic_builtin_shapes_have_their_checkpoints_parameter_count(name, published):
    import torch
    import transformers

    from bench.engine.sources.models import BUILTIN_MODELS

    entry = BUILTIN_MODELS[name]
    config = getattr(transformers, entry["config_class"])(**entry["config"])
    with torch.device("meta"):  # the shapes only: no 2 GB of weights
        model = getattr(transformers, entry["model_class"])(config)
    assert sum(p.numel() for p in model.parameters()) == published
