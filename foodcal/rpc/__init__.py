"""What every service's process is built from: the gRPC server, interceptors, errors, metrics, logs, TLS."""
