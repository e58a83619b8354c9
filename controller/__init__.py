"""The central service: registry and liveness, placement, the store, leases, handlers, server loop."""
