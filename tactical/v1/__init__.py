"""Generated protobuf and gRPC stubs of protos/tactical/v1 (python protos/generate.py); do not edit."""
