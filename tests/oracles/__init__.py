"""Slow, plainly written implementations that tests (and `bench.pixel_metrics`) check the fast paths against."""
