"""Safety: scenario files are data; sources run no code unless the user opts in; names stay in their folder.

Each "no code runs" check has a control that proves the code would run, and be seen, when allowed: a model
folder whose Python module creates a marker file when imported, a pickle whose unpickling creates one.
"""

from __future__ import annotations

import ast
import json
import shutil
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.cli.main import build_parser
from bench.engine.sources.models import resolve_model
from bench.errors import ScenarioError
from bench.ops import OPS
from bench.runner.launch import RunOptions, case_spec
from bench.scenario import load_scenario
from bench.scenario.loader import parse_scenario
from bench.spec.cases import expand
from bench.worker import inject
from bench.worker.__main__ import run_spec
from tests.conftest import FAST_TIMING, LOAD_A, ONE_ADAPTER, REPO, scenario_toml

BENCH = REPO / "bench"


def _scenario(model: str, *, opt_in: dict | None = None, adapter: dict = ONE_ADAPTER["a"]) -> str:
    """Load adapter `a` onto `model`; `opt_in` holds [scenario] fields such as trust_remote_code."""
    return scenario_toml(
        "safety", [LOAD_A], model=model, scenario=opt_in, timing=FAST_TIMING, adapters={"a": adapter}
    )


def _run(path: Path, cache_root: Path, **opts):
    (case,) = expand(load_scenario(path))
    return run_spec(case_spec(case, RunOptions(out_dir=path.parent, cache_root=cache_root, **opts)))


@pytest.fixture(scope="session")
def llama(cache_root) -> Path:
    return Path(resolve_model("builtin:tiny-llama", cache_root).location)


# ---------------------------------------------------------------------------------------------------------
# Scenario files are data


CODE = "__import__('pathlib').Path({marker!r}).touch()"


def test_code_in_every_string_of_a_scenario_is_never_run(tmp_path, write_scenario):
    marker = tmp_path / "ran"
    code = CODE.format(marker=str(marker))
    # Inline text, not scenario_toml: the code sits in every string of the file, and the test edits the text.
    text = f"""
        [scenario]
        name = "data"
        model = "builtin:tiny-llama"
        description = "{code}"
        tags = ["{code}"]
        [matrix]
        compile = ["none"]
        [adapters.a]
        rank = 4
        [[steps]]
        op = "load_adapter"
        adapter = "a"
        note = "{code}"
        known_failure = {{ expectation = "succeeds", reason = "{code}" }}
    """
    s = load_scenario(write_scenario(text))
    assert s.description == code and s.tags == (code,)  # kept as text, never run
    assert s.steps[0].known_failures[0].reason == code
    # Where a string must be a name or an exception class name, code is refused, not looked up.
    with pytest.raises(ScenarioError, match="invalid name"):
        load_scenario(write_scenario(text.replace('name = "data"', f'name = "{code}"'), "name.toml"))
    with pytest.raises(ScenarioError, match="exception class name"):
        load_scenario(
            write_scenario(text.replace('note = "', f'expect = {{ raises = "{code}" }}\nnote = "'), "r.toml")
        )
    with pytest.raises(ValueError, match="unknown built-in model"):
        resolve_model("builtin:" + code, tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("op", ["__init__", "apply", "_hotswap", "__class__", "forward.__globals__"])
def test_ops_dispatch_only_to_the_fixed_table(op, write_scenario):
    """The worker looks ops up in the registry: an op outside it never reaches a method."""
    # Inline text: hostile op names in a file that is otherwise as short as a scenario gets.
    text = f'[scenario]\nname = "x"\nmodel = "m"\n[[steps]]\nop = "{op}"\n'
    with pytest.raises(ScenarioError, match="unknown op"):
        load_scenario(write_scenario(text))


def test_every_op_is_in_the_registry_under_its_name():
    assert all(op.name == name for name, op in OPS.items())


# Calls that would turn data into code (or into arbitrary objects) if their argument came from a file.
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "execfile"}
FORBIDDEN_ATTRS = {
    ("pickle", "load"),
    ("pickle", "loads"),
    ("marshal", "loads"),
    ("torch", "load"),
    ("yaml", "load"),
}


def forbidden_calls(source: str, filename: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Name) and f.id in FORBIDDEN_CALLS:
            found.append(f"{filename}:{node.lineno} {f.id}()")
        if (
            isinstance(f, ast.Attribute)
            and isinstance(f.value, ast.Name)
            and (f.value.id, f.attr) in FORBIDDEN_ATTRS
        ):
            found.append(f"{filename}:{node.lineno} {f.value.id}.{f.attr}()")
    return found


# The one place allowed to compile source: the record codec makes each record class's builder from that
# class's field names (as dataclasses makes an __init__), never from anything a file holds: 23 % of a large
# results file's load (bench.spec.codec._direct_build). Exact: a call added or removed there fails the test.
ALLOWED_CALLS = {"bench/spec/codec.py": ["compile()", "exec()"]}


def test_the_suite_never_evaluates_or_unpickles():
    found, allowed = [], {}
    for path in sorted(BENCH.rglob("*.py")):
        name = str(path.relative_to(REPO))
        calls = forbidden_calls(path.read_text(), name)
        if name in ALLOWED_CALLS:
            allowed[name] = sorted(c.split(" ", 1)[1] for c in calls)
            continue
        found += calls
    assert found == []
    assert allowed == ALLOWED_CALLS


def test_the_codec_builds_records_from_data_without_evaluating_it(tmp_path):
    """What a results file holds reaches the codec's builders only as values: text that is code stays text,
    and a field name that is code is refused as an unknown field, as the record's own __init__ refuses it."""
    from bench.results.records import Outcome
    from bench.spec.codec import from_dict

    marker = tmp_path / "ran"
    code = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    data = {"expectation": code, "expected": code, "actual": "1", "held": True, "status": "pass"}
    built = from_dict(Outcome, data)
    assert built.expectation == code and built.expected == code and not marker.exists()
    with pytest.raises(ValueError, match="unknown field"):
        from_dict(Outcome, {**data, code: 1})
    assert not marker.exists()


def test_negative_control_the_scan_finds_eval_and_unpickling():
    sample = "import pickle, torch\neval(x)\npickle.loads(b)\ntorch.load(p)\nexec(c)\n"
    assert len(forbidden_calls(sample, "sample.py")) == 4


# ---------------------------------------------------------------------------------------------------------
# trust_remote_code


def _remote_code_model(llama: Path, folder: Path, marker: Path) -> Path:
    """A model folder with its own Python module (auto_map); importing it creates `marker`."""
    folder.mkdir()
    shutil.copy(llama / "model.safetensors", folder)
    config = json.loads((llama / "config.json").read_text())
    config.update(
        model_type="marker-llama",
        architectures=["MarkerForCausalLM"],
        auto_map={"AutoConfig": "marker.MarkerConfig", "AutoModelForCausalLM": "marker.MarkerForCausalLM"},
    )
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "marker.py").write_text(
        textwrap.dedent(f"""
        from pathlib import Path
        from transformers import LlamaConfig, LlamaForCausalLM

        Path({str(marker)!r}).touch()  # the "remote code" ran


        class MarkerConfig(LlamaConfig):
            model_type = "marker-llama"


        class MarkerForCausalLM(LlamaForCausalLM):
            config_class = MarkerConfig
        """)
    )
    return folder


@pytest.fixture
def modules_cache(tmp_path, monkeypatch):
    """transformers copies remote code into HF_MODULES_CACHE before importing it: keep that in tmp_path."""
    from transformers import dynamic_module_utils

    monkeypatch.setattr(dynamic_module_utils, "HF_MODULES_CACHE", str(tmp_path / "hf-modules"))
    monkeypatch.syspath_prepend(str(tmp_path / "hf-modules"))
    return tmp_path / "hf-modules"


def test_remote_code_stays_off_unless_opted_in(tmp_path, llama, cache_root, modules_cache):
    marker = tmp_path / "remote-code-ran"
    model = _remote_code_model(llama, tmp_path / "remote_model_a", marker)
    path = tmp_path / "remote.toml"
    path.write_text(_scenario(str(model)))
    refused = _run(path, cache_root)
    assert refused.verdict == "error" and "trust_remote_code" in refused.reason
    assert not marker.exists()

    # The control: with the scenario's opt-in the module runs (the marker appears) and the case passes.
    path.write_text(_scenario(str(model), opt_in={"trust_remote_code": True}))
    allowed = _run(path, cache_root)
    assert marker.exists()
    assert allowed.verdict == "pass", allowed.reason


def test_remote_code_opt_in_from_the_command_line(tmp_path, llama, cache_root, modules_cache, cli):
    """--trust-remote-code reaches the worker through its case spec: the CLI writes it, the worker obeys it."""
    marker = tmp_path / "cli-remote-code-ran"
    model = _remote_code_model(llama, tmp_path / "remote_model_b", marker)
    path = tmp_path / "remote.toml"
    path.write_text(_scenario(str(model)))
    out = tmp_path / "out"
    env = {inject.ENV_VAR: "safety:abort@start"}
    for flags, expected in (([], False), (["--trust-remote-code", "--allow-pickle"], True)):
        proc = cli("run", path, "--out", out, "--cache", cache_root, *flags, env=env)
        assert proc.returncode == 1, proc.stdout + proc.stderr  # the worker aborts at start (injected)
        spec = json.loads((out / "cases" / "safety_fp32-none.case.json").read_text())
        assert spec["trust_remote_code"] is expected and spec["allow_pickle"] is expected
        (out / "results.json").unlink()
    assert not marker.exists()
    result = run_spec(spec)  # the spec the CLI wrote, run by the worker's own entry
    assert result.verdict == "pass", result.reason
    assert marker.exists()


def test_cli_flags_parse():
    args = build_parser().parse_args(["run", "x.toml", "--trust-remote-code", "--allow-pickle"])
    assert args.trust_remote_code and args.allow_pickle
    args = build_parser().parse_args(["run", "x.toml"])
    assert not args.trust_remote_code and not args.allow_pickle


# ---------------------------------------------------------------------------------------------------------
# Pickle weight files


class _Payload:
    """Unpickling this object creates a marker file: what a malicious weights file does."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _pickle_only_model(llama: Path, folder: Path, payload_marker: Path | None = None) -> Path:
    import pickle

    import torch
    from safetensors.torch import load_file

    folder.mkdir()
    shutil.copy(llama / "config.json", folder)
    if payload_marker is None:
        torch.save(load_file(llama / "model.safetensors"), folder / "pytorch_model.bin")
    else:
        (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(payload_marker)))
    return folder


def test_pickle_model_weights_are_refused_unless_allowed(tmp_path, llama, cache_root):
    marker = tmp_path / "unpickled"
    evil = _pickle_only_model(llama, tmp_path / "evil_model", payload_marker=marker)
    path = tmp_path / "evil.toml"
    path.write_text(_scenario(str(evil)))
    refused = _run(path, cache_root)
    assert refused.verdict == "error"
    assert "weights are pickle files (pytorch_model.bin), refused" in refused.reason
    assert "--allow-pickle" in refused.reason
    assert not marker.exists()

    # The control: real weights in a pickle file load once allowed (scenario opt-in), and the case passes.
    plain = _pickle_only_model(llama, tmp_path / "pickle_model")
    path.write_text(_scenario(str(plain)))
    assert _run(path, cache_root).verdict == "error"
    path.write_text(_scenario(str(plain), opt_in={"allow_pickle": True}))
    allowed = _run(path, cache_root)
    assert allowed.verdict == "pass", allowed.reason


def test_safetensors_win_over_a_pickle_beside_them(tmp_path, llama, cache_root):
    """A folder with both: the safetensors file is loaded, the pickle beside it is never opened."""
    import pickle

    marker = tmp_path / "unpickled"
    folder = tmp_path / "both"
    shutil.copytree(llama, folder)
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    path = tmp_path / "both.toml"
    path.write_text(_scenario(str(folder)))
    result = _run(path, cache_root)
    assert result.verdict == "pass", result.reason
    assert not marker.exists()


def test_pickle_adapter_weights_are_refused_unless_allowed(tmp_path, llama, cache_root):
    import torch
    from safetensors.torch import load_file

    from bench.engine.sources.adapters import resolve_adapter
    from bench.spec.schema import AdapterSpec

    lora = Path(
        resolve_adapter(
            AdapterSpec(key="lora", rank=4, seed=1),
            resolve_model("builtin:tiny-llama", cache_root),
            cache_root,
        ).location
    )
    folder = tmp_path / "pickle_adapter"
    shutil.copytree(lora, folder)
    torch.save(load_file(folder / "adapter_model.safetensors"), folder / "adapter_model.bin")
    (folder / "adapter_model.safetensors").unlink()
    path = tmp_path / "adapter.toml"
    path.write_text(_scenario("builtin:tiny-llama", adapter={"path": str(folder)}))
    refused = _run(path, cache_root)
    assert refused.verdict == "error"
    assert "adapter 'a'" in refused.reason and "pickle files (adapter_model.bin), refused" in refused.reason
    # The control: with the command line's --allow-pickle the suite lets the load through, and the step
    # records the library's own answer. (transformers 5.23's load_adapter looks for adapter_model.safetensors
    # even when only adapter_model.bin exists, so the load itself fails there.)
    allowed = _run(path, cache_root, allow_pickle=True)
    assert "refused" not in allowed.reason
    assert allowed.steps and allowed.steps[0].op == "load_adapter" and allowed.steps[0].status != "not_run"
    assert "a" not in allowed.footprint.adapter_bytes  # not measured (no safetensors file), not a made-up 0


# ---------------------------------------------------------------------------------------------------------
# Names from a scenario never escape the output folder


ESCAPES = ["../escape", "a/b", "..", ".hidden", "x\n", "a\\b", "a\x00b", "", "a" * 65, "/abs", "café", "a b"]


@pytest.mark.parametrize("name", ESCAPES, ids=repr)
def test_hostile_names_are_refused_everywhere_a_name_goes(name):
    base = {
        "scenario": {"name": "ok", "model": "m"},
        "adapters": {"a": {"rank": 4}},
        "steps": [{"op": "load_adapter", "adapter": "a"}],
    }
    where = {
        "scenario.name": lambda d: d["scenario"].update(name=name),
        "adapter key": lambda d: d.update(
            adapters={name: {"rank": 4}}, steps=[{"op": "load_adapter", "adapter": name}]
        ),
        "step name": lambda d: d["steps"][0].update(name=name),
    }
    for mutate in where.values():
        data = json.loads(json.dumps(base))
        mutate(data)
        with pytest.raises(ScenarioError, match="invalid name"):
            parse_scenario(data, "s.toml")


NAME_CHARS = st.characters(codec="utf-8", exclude_categories=("Cs",))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.text(NAME_CHARS, max_size=70) | st.sampled_from(ESCAPES))
def test_any_accepted_name_stays_inside_its_folder(tmp_path_factory, name):
    data = {
        "scenario": {"name": name, "model": "m"},
        "matrix": {"compile": ["none", {"backend": "inductor", "mode": "max-autotune", "fullgraph": True}]},
        "adapters": {name: {"rank": 4}},
        "steps": [{"op": "load_adapter", "adapter": name, "name": name}],
    }
    try:
        scenario = parse_scenario(data, "s.toml")
    except ScenarioError:
        return
    root = tmp_path_factory.getbasetemp().resolve() / "names"
    cases_dir = root / "cases"
    for case in expand(scenario):
        for suffix in (".case.json", ".json", ".log"):
            path = (cases_dir / f"{case.file_stem}{suffix}").resolve()
            assert path.parent == cases_dir, (name, path)
    for kind in (
        "adapters",
        "models",
    ):  # the cache folders named after adapter keys (bench.engine.sources.cache)
        assert (root / kind / f"{name}-0123456789abcdef").resolve().parent == root / kind
