"""Ready-made tasks used by the demo, the CLI examples and the benchmarks."""
