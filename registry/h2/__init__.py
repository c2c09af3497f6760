"""Sans-I/O HTTP/2 for the native gRPC front."""
