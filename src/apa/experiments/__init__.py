"""Experiments that run the whole pipeline (prepare, train, predict, evaluate) and compare
it with controls; each is reachable from one `apa` command.

- ``proxy``: the real-data proof (`apa proxy`, docs/real-data-proof.md): a small
  Qwen2-Audio-shaped model trained from scratch on speechocean762, against the same model
  trained and tested on swapped audio and on silence, a constant predictor and the experts.
"""
