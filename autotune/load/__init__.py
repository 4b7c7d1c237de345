"""What a benchmark sends and measures: workload, images, the streaming client, metrics."""
