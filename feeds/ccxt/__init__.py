"""Crypto exchanges through ccxt and its pro WebSocket layer: one feed for any ccxt exchange.

``symbols`` maps ccxt's unified symbols to canonical instruments, ``parser`` turns ccxt's unified
structures into engine events (pure), ``feed`` runs the ccxt.pro exchange (sessions, per-symbol resync,
backoff, circuit breaker, health). Imports inside are absolute, so ``import ccxt`` is the library.
"""
