"""verl's custom-reward entry point for ALR: `compute_score` (per response) and `compute_score_batch`.

Point verl at it with `reward.custom_reward_function.path=reward_fns/alr.py` (or `pkg://reward_fns.alr`)
and `name=compute_score`; settings travel in `reward.custom_reward_function.reward_kwargs`, which verl
merges into every call's keyword arguments. See docs/rewards.md.

verl may load this file by path as an anonymous module, so it only re-exports: the implementation lives
in the package (absolute imports), where its cached ASR and VAD objects are shared however it is loaded.
"""

from reward_fns.compose import compute_score, compute_score_batch

__all__ = ["compute_score", "compute_score_batch"]
