"""mds server: the state engine, the gRPC service and the CLI."""
