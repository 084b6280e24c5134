"""The `vllm` rollout backend (``rollout.name=vllm``): verl's vLLM rollout with whole audio for audio models.

``replica.OmniVLLMReplica`` starts ``server.OmniVLLMHttpServer`` actors (and a speech server when speech is on);
``worker.OmniVLLMWorkerExtension`` runs inside vLLM's workers; ``adapter.OmniVLLMServerAdapter`` is verl's
worker-side adapter plus the speech copy. Importing this package needs vLLM.
"""
