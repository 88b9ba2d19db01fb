"""Training: pure loss functions (losses.py) and simulated preference pairs (pairs.py).

Importing this package imports nothing heavy: ``apa.training.pairs`` needs numpy only,
``apa.training.losses`` needs torch.
"""
