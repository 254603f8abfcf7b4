"""Tools beside the services: code generation, supervisord's crash watcher, the container health probe."""
