"""trm-kaggle: a Tiny Recursive Model pipeline for Kaggle's ARC Prize."""

__version__ = "0.1.0"
