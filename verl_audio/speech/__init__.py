"""The speech stage: a generated response -> speech, with the checkpoint's talker and token2wav.

A layer the rollout and eval use, which uses neither (it imports only ``verl_audio.models``):

* ``stage.SpeechStage``: thinker forward -> talker conditioning -> codec tokens -> token2wav, for a batch of
  ``stage.SpeechRequest`` (the one request type);
* ``talker``: loads the frozen talker, token2wav and speakers; ``missing_speech_parts`` is the one check of
  whether a checkpoint can speak;
* ``config.SpeechOptions``: ``rollout.engine_kwargs.speech``, and ``SAMPLING_RATE``, token2wav's output rate.

Who runs it: the rollout's speech service (``verl_audio.rollout.speech_server``: inside the `hf` server, or as
``speech_server_<replica>`` beside vLLM; the agent loop ``verl_audio.rollout.agent_loop`` asks it for each
audio-output row), and eval (``verl_audio.eval.speech.EvalSpeech``). The trainer decides at start whether a
run speaks (``verl_audio.trainer.speech_setup``) and takes the waveforms out of the batch
(``verl_audio.trainer.speech_tap``).
"""
