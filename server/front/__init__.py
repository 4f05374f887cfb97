"""The gRPC front: a process whose event loop only runs the public gRPC server, forwarding every RPC to
the service process over a socket pair (``mds serve --grpc-front``; see ``process`` and ``bridge``)."""
