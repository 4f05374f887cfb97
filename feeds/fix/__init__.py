"""FIX 4.4 market data from a liquidity provider: ``parser`` (pure: W/X/Y text to engine events),
``config`` (the ``fix:...`` spec and quickfix's settings) and ``session`` (the quickfix initiator as a
``Feed``; importing it needs the optional ``quickfix`` package, extra ``fix``).
"""
