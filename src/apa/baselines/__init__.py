"""Predictors that are not audio language models, measured here beside them: gop.py, a
regression from a pretrained acoustic model's evidence (`apa baseline gop`)."""
