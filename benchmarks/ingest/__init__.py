"""Ingest benchmark pieces: the input generator and the naive baseline."""
