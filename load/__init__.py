"""Load generators for a running `mds serve` (issue 3): ghz unary load and server-stream fan-out load.

Each is a command that prints figures (none is a test); see "Service (issue 3)" in BENCHMARKS.md.
"""
