"""Training: settings (config.py), data order (data.py), one objective per method
(objectives.py) over pure losses (losses.py), simulated preference pairs (pairs.py, slopes.py),
checkpoints (checkpoint.py), the metrics log (run_log.py) and the loop (loop.py).

Importing this package imports nothing heavy: ``apa.training.pairs`` needs numpy only.
"""
