"""verl-audio: RL post-training for audio-language models, plugged into verl."""

__version__ = "0.1.0"
