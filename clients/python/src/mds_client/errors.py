"""The facade's single exception type, :class:`MdsError`, and its mapping from gRPC errors."""

from __future__ import annotations

import grpc

__all__ = ["MdsError", "from_rpc_error"]


class MdsError(Exception):
    """A failed call: the gRPC status code name (``"NOT_FOUND"``, ``"INVALID_ARGUMENT"`` ...) and details.

    The service's error contract (see market_data_service.proto and alert_service.proto): NOT_FOUND
    for an unknown symbol, venue or alert id, INVALID_ARGUMENT for a bad depth, interval, time range,
    condition or source. Transport problems surface as UNAVAILABLE / DEADLINE_EXCEEDED.
    """

    code: str
    message: str

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    @property
    def status(self) -> grpc.StatusCode | None:
        """The :class:`grpc.StatusCode` named by :attr:`code`, or None for a name gRPC does not know."""
        return grpc.StatusCode.__members__.get(self.code)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.message else self.code

    def __repr__(self) -> str:
        return f"MdsError(code={self.code!r}, message={self.message!r})"


def from_rpc_error(error: grpc.RpcError) -> MdsError:
    """Build an :class:`MdsError` from a gRPC error (``grpc.aio.AioRpcError`` or a sync call error).

    A ``grpc.RpcError`` without ``code()`` / ``details()`` (not raised by a call) maps to UNKNOWN.
    """
    code_fn = getattr(error, "code", None)
    details_fn = getattr(error, "details", None)
    code = code_fn() if callable(code_fn) else None
    details = details_fn() if callable(details_fn) else None
    name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    return MdsError(name, details if isinstance(details, str) else "")
