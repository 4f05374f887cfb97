"""The pure state engine: normalized events in, typed updates out; no I/O, no asyncio, no clock of its own."""
