"""Corpus readers (so762.py, so762_hub.py, kaldi.py, synthetic.py), the manifest schema
(manifest.py), audio loading (audio.py) and pronunciations (lexicon.py)."""
