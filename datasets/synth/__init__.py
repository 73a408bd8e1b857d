"""Writers of small, format-faithful sample datasets, for the demo and the tests."""
