"""Serving replay: a seeded request stream over many adapters, served by one switching strategy per case,
every response (or a recorded sample) checked against a fresh eager reference of its adapter.

The flow inside a serve step: stream (the requests) -> strategies (set the model up, switch, call) -> replay
(the queue in virtual time over measured service times) -> check (references, per response) -> figures.
"""
