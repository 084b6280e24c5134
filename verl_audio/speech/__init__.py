"""The speech stage: the rollout speaks its responses with the checkpoint's talker and token2wav.

For rows whose ``extra_info.output_modality`` is ``audio``. Pieces, in the order a response meets them:

* ``agent_loop.SpeakingAgentLoop``: after verl's single-turn generation, asks a speech server to speak
  the response; the waveform goes to the rewards as ``extra_info["response_audio"]``.
* ``endpoints``: which Ray actors speak (the `hf` rollout servers, or ``speech_server_<replica>``).
* ``server.SpeechServer``: async ``speak`` with batching; hosted in the `hf` server (shared thinker)
  or stand-alone (``StandaloneSpeechServer``: own thinker, ``update_weights`` from the actor).
* ``stage.SpeechStage``: thinker forward -> talker conditioning -> codec tokens -> token2wav.
* ``talker``: loads the frozen talker, token2wav and speakers; refuses thinker-only checkpoints.
* ``config.SpeechOptions``: ``rollout.engine_kwargs.speech``.
* ``setup.configure``: at start, from the data: speech on or off, checkpoint check, agent loop.
* ``trainer_hook.SpeechTap``: metrics, validation samples, waveforms dropped before training.
"""
