"""foodcal's shared code: settings, the sample store, gRPC helpers and the generated contracts."""
