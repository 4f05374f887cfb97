"""Tests of the hand-written Python client facade (clients/python/src/mds_client)."""
