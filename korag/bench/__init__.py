"""Benchmarks shipped as `korag bench ...` commands. Only the CLI imports this package; the
library never does."""
