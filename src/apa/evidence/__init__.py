"""Evidence about a recording from models other than the one being trained: a pretrained
acoustic model's alignment and Goodness of Pronunciation (acoustic.py), stored beside a
manifest (store.py), computed for a whole manifest (extract.py) and summarised for a prompt
or a regression (features.py)."""
