"""vLLM general plugin (entry point ``vllm.general_plugins``): vLLM runs it first in each of its processes.

vLLM's engine-core process never imports verl, so verl's plugin hook (``verl_audio.plugin``) does not run there,
yet it builds the Omni processor and config, and transformers then prints seven warnings about the talker's
thinker-vocabulary ids (``verl_audio.patches.patch_quiet_talker_token_ids``). This entry point applies that
patch in every vLLM process; it imports neither verl nor vLLM's model code.
"""

from __future__ import annotations


def register() -> None:
    """Apply the patches a vLLM process without verl needs (idempotent)."""
    from verl_audio.patches import patch_quiet_talker_token_ids

    patch_quiet_talker_token_ids()
