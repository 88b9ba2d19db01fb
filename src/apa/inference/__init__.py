"""Inference: decoding modes and one batch (decoding.py), greedy free decoding (free.py),
constrained decoding with expected scores (constrained.py), batched resumable prediction
over a manifest (predict.py) split across processes (sharding.py), and one recording's
scores (score.py)."""
