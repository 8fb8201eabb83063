"""Subcommands that read results: each module has NAME, register(sub) and run(args) -> exit code."""
