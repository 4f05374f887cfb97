"""Benchmark commands (`mds bench ...`): each prints figures; none is a timed test."""
