"""The language-model track: causal LMs as policies, built here or plugged in by path.

Everything here needs the ``lm`` extra (``transformers``, ``tokenizers``); importing
this package does not, so listings work without it.
"""
