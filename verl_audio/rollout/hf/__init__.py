"""The `hf` rollout backend (``rollout.name=hf``): transformers generation behind verl's server protocol.

In the order a request meets them: ``replica.HFReplica`` (one server actor per replica, hybrid mode),
``server.HFRolloutServer`` (vLLM-compatible ``generate`` and control calls), the shared batcher and featurizer,
``engine.AudioGenerator`` (left-padded prefill with audio, KV-cached decode), and on the actor workers
``adapter.HFServerAdapter`` (weights each step). ``config.HFRolloutOptions``: ``rollout.engine_kwargs.hf``.
"""

#: name of the backend in verl's registries and prefix of its server actors' names
BACKEND = "hf"
