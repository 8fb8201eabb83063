"""The [adapters] table: saved adapter folders, generated LoRA specs, and generated families."""

from __future__ import annotations

import re
from typing import Any

from bench.spec.schema import ADAPTER_TYPES, AdapterSpec
from bench.spec.table import (
    MAX_RANK,
    Table,
    checked_name,
    short,
)

# alpha (and alphas, alpha_pattern) in (0, MAX_ALPHA]: the scaling alpha / rank stays finite and positive.
MAX_ALPHA = 1e6

# ---------------------------------------------------------------------------------------------------------
# Reading


def adapters_table(t: Table) -> tuple[dict[str, AdapterSpec], dict[str, tuple[str, ...]]]:
    out: dict[str, AdapterSpec] = {}
    families: dict[str, tuple[str, ...]] = {}
    for key in t.data:
        t.used.add(key)
        checked_name(t, key, key)
        a = t.sub(key)
        if "count" in a.data:
            members = _family(a, key)
            for spec in members:
                if spec.key in t.data or spec.key in out:
                    raise a.error("count", f"family member {spec.key!r} clashes with another adapter's key")
                out[spec.key] = spec
            families[key] = tuple(m.key for m in members)
            continue
        path = a.get("path", str, None)
        if path is not None:
            a.finish()  # a saved adapter carries its own config: no spec fields beside the path
            out[key] = AdapterSpec(key=key, path=path)
            continue
        kind = a.choice("type", ADAPTER_TYPES, "lora")
        if kind != "lora" and "use_dora" in a.data:
            raise a.error(
                "use_dora", f"DoRA is a LoRA variant: an adapter of type {kind!r} takes no use_dora"
            )
        if kind == "ia3":
            out[key] = _ia3(a, key)
            continue
        rank = a.int_in("rank", 8, 1, MAX_RANK)
        alpha = a.get("alpha", float, float(2 * rank))
        target_parameters = _target_parameters(a, kind)
        targets = _targets(a, ("q_proj", "v_proj"), allow_empty=bool(target_parameters))
        rank_pattern = _pattern(a, "rank_pattern", int)
        alpha_pattern = _pattern(a, "alpha_pattern", float)
        for k, r in rank_pattern:
            if not 1 <= r <= MAX_RANK:
                raise a.error(f"rank_pattern.{k}", f"must be between 1 and {MAX_RANK}, got {short(r)}")
        # The range a family's alphas have: 0 makes the adapter the base model, and a huge or negative one
        # gives non-finite or sign-flipped logits that fail the oracles for the input's sake, not the library's.
        for field_name, value in (("alpha", alpha), *((f"alpha_pattern.{k}", v) for k, v in alpha_pattern)):
            if not 0 < value <= MAX_ALPHA:
                raise a.error(field_name, f"must be in (0, {MAX_ALPHA:g}], got {short(value)}")
        if kind == "adalora":
            for lora_only in ("rank_pattern", "alpha_pattern", "modules_to_save"):
                if lora_only in a.data:
                    raise a.error(lora_only, "a LoRA field: AdaLoRA allocates its ranks itself")
        spec = AdapterSpec(
            key=key,
            type=kind,
            rank=rank,
            alpha=alpha,
            targets=targets,
            seed=a.int_in("seed", 0, 0, 2**31 - 1),
            rank_pattern=rank_pattern,
            alpha_pattern=alpha_pattern,
            init_std=a.get("init_std", float, 0.05),
            lora_dropout=a.get("lora_dropout", float, 0.0),
            modules_to_save=a.str_list("modules_to_save", ()),
            target_parameters=target_parameters,
            use_dora=a.get("use_dora", bool, False),
            save_embedding_layers=a.get("save_embedding_layers", bool, True),
        )
        if not 0 < spec.init_std <= 10:
            raise a.error("init_std", f"must be in (0, 10], got {spec.init_std}")
        if not 0 <= spec.lora_dropout < 1:
            raise a.error("lora_dropout", f"must be in [0, 1), got {spec.lora_dropout}")
        if target_parameters and spec.lora_dropout:
            raise a.error(
                "lora_dropout", "must be 0 with target_parameters (peft's ParamWrapper has no dropout)"
            )
        a.finish()
        out[key] = spec
    return out, families


def _ia3(a: Table, key: str) -> AdapterSpec:
    """type = "ia3": learned rescaling vectors on `targets`; `feedforward` ones rescale the layer's input."""
    for lora_only in (
        "rank",
        "alpha",
        "rank_pattern",
        "alpha_pattern",
        "lora_dropout",
        "modules_to_save",
        "save_embedding_layers",
        "target_parameters",
    ):
        if lora_only in a.data:
            raise a.error(lora_only, "not an IA3 field (IA3 learns one rescaling vector per target: no rank)")
    targets = _targets(a, ("k_proj", "v_proj", "down_proj"))
    feedforward = a.str_list("feedforward", ("down_proj",) if "down_proj" in targets else ())
    stray = [f for f in feedforward if f not in targets]
    if stray:
        raise a.error("feedforward", f"must be a subset of targets, not {', '.join(stray)}")
    spec = AdapterSpec(
        key=key,
        type="ia3",
        targets=targets,
        feedforward=feedforward,
        seed=a.int_in("seed", 0, 0, 2**31 - 1),
        init_std=_init_std(a),
    )
    a.finish()
    return spec


# A family's size is bounded: each member is a built, saved and loaded adapter.
MAX_FAMILY = 256


def _family(a: Table, key: str) -> list[AdapterSpec]:
    """[adapters.NAME] with `count`: NAME0 .. NAME{count-1}, ranks and alphas taken in turn, seeds seed + i."""
    count = a.int_in("count", None, 1, MAX_FAMILY)
    ranks = a.get("ranks", list, [8])
    alphas = a.get("alphas", list, None)
    for field_name, values in (("ranks", ranks), ("alphas", alphas or [1])):
        if not values:
            raise a.error(field_name, "needs at least one value")
        for i, v in enumerate(values):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= MAX_ALPHA:
                raise a.error(f"{field_name}[{i}]", f"expected a positive number, got {short(v)}")
    for i, r in enumerate(ranks):
        if not isinstance(r, int) or not 1 <= r <= MAX_RANK:
            raise a.error(f"ranks[{i}]", f"must be an integer between 1 and {MAX_RANK}, got {short(r)}")
    targets = _targets(a, ("q_proj", "v_proj"))
    seed = a.int_in("seed", 0, 0, 2**31 - 1 - MAX_FAMILY)
    init_std = _init_std(a)
    a.finish()
    members = []
    for i in range(count):
        rank = ranks[i % len(ranks)]
        alpha = float(alphas[i % len(alphas)]) if alphas else float(2 * rank)
        members.append(
            AdapterSpec(
                key=f"{key}{i}", rank=rank, alpha=alpha, targets=targets, seed=seed + i, init_std=init_std
            )
        )
    return members


def _targets(a: Table, default: tuple[str, ...], *, allow_empty: bool = False) -> tuple[str, ...]:
    """`allow_empty`: the adapter targets parameters (target_parameters), so no module at all is fine, and
    leaving `targets` out means none (peft's LoraConfig alike), not the attention default."""
    targets = a.str_list("targets", () if allow_empty else default)
    if not targets and not allow_empty:
        raise a.error("targets", "needs at least one target module")
    return targets


_PARAMETER_NAME = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")


def _target_parameters(a: Table, kind: str) -> tuple[str, ...]:
    """LoRA on nn.Parameters by name (peft's target_parameters): dotted names, each matching a parameter's
    full name or its dotted suffix."""
    names = a.str_list("target_parameters", ())
    if names and kind != "lora":
        raise a.error("target_parameters", f"a LoRA field: {kind} does not target parameters")
    for i, name in enumerate(names):
        if not _PARAMETER_NAME.fullmatch(name):
            raise a.error(f"target_parameters[{i}]", f"expected a dotted parameter name, got {short(name)}")
        if name in names[:i]:
            raise a.error(f"target_parameters[{i}]", f"{name!r} is listed twice")
    return names


def _init_std(a: Table) -> float:
    """The spread of the seeded draws (LoRA's A and B, IA3's vectors around 1)."""
    init_std = a.get("init_std", float, 0.05)
    if not 0 < init_std <= 10:
        raise a.error("init_std", f"must be in (0, 10], got {init_std}")
    return init_std


def _pattern(t: Table, key: str, kind: type) -> tuple[tuple[str, Any], ...]:
    sub = t.sub(key, {})
    items = []
    for k in sub.data:
        items.append((k, sub.get(k, kind)))
    sub.finish()
    return tuple(sorted(items))
