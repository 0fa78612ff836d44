"""Core types: named arrays, messages, results, config. No Ray, no I/O."""
