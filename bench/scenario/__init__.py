"""Scenario files: the schema (what a scenario is) and the loader (TOML in, validated Scenario out)."""

from bench.scenario.loader import discover, load_scenario, load_scenarios
from bench.spec.schema import Scenario

__all__ = ["Scenario", "discover", "load_scenario", "load_scenarios"]
