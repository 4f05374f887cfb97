"""The gRPC service layer of mds: servicers, conversion of engine records to marketdata.v1 messages."""
