"""Command-line interfaces: shared plumbing (`common`) and `clara-models`."""
