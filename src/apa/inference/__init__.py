"""Inference: batched generation of score text (generate.py); decoding modes plug in there."""
