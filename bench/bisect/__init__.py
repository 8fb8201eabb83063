"""Bisect a guarantee across library releases or source commits: the first bad version and the last good one.

versions.py lists the candidates (releases from the package index, or commits of a local git checkout),
envs.py builds and caches one probe environment per (package, version), probe.py runs the scenarios in one
and decides good | bad | untestable by a chosen criterion (criteria.py), search.py is the binary search with
`git bisect skip` semantics, and table.py renders the search as reports/bisect/<name>/bisect.md.
"""
