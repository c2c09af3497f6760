"""Generated protobuf/gRPC modules (python proto/generate.py)."""
