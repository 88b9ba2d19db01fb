"""apa: fine-tune audio language models to assess English pronunciation."""

__version__ = "0.1.0"
