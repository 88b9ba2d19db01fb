"""Corpus readers, the manifest schema and audio loading."""
