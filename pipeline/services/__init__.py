"""Services the pipeline starts for itself: the loopback image mirror and the Ray runtime."""
