"""The per-node daemon: controller connection, reconciler, isolation backends, local state."""
