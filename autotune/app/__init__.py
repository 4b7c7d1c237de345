"""The use cases (tune, serve, verify, gpus, from-study, views): the only composition root."""
