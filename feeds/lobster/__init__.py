"""LOBSTER (lobsterdata.com) message + orderbook files: L3 messages turned into L2 book events.

``parser`` is pure; ``reader`` is the only file I/O.
"""
