"""Evaluation: ``python -m verl_audio.eval`` (``cli``), the generation backends (``generation``), the scorer
shared with training validation (``scoring``), spoken answers and their WER (``speech``), and the report.

Importing the package loads nothing heavy: the trainer imports ``scoring`` for its validation metrics.
"""
