"""Many workers on one study: heartbeat storage, seeds, the shared budget, who finishes."""
