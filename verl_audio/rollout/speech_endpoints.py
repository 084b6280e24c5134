"""Finding the actors that speak: ``speak`` is served by named Ray actors of the current job.

* the `hf` backend: its rollout servers ``hf_server_<replica>_0`` (the stage shares their thinker);
* any other backend: ``speech_server_<replica>`` actors (``StandaloneSpeechServer``) that the backend
  starts and feeds the actor's weights each step. When both exist, the stand-alone ones are used.
"""

from __future__ import annotations

import itertools
import re
import threading

import ray

SPEECH_ACTOR_PREFIX = "speech_server_"
_HF_SERVER = re.compile(r"^hf_server_\d+_0$")  # rollout servers only, not reward/teacher ones
_SPEECH_SERVER = re.compile(rf"^{SPEECH_ACTOR_PREFIX}\d+$")

_lock = threading.Lock()
_handles: list[ray.actor.ActorHandle] = []
_cycle: itertools.cycle | None = None


def speech_actor_name(replica_rank: int) -> str:
    """Ray actor name of a stand-alone speech server."""
    return f"{SPEECH_ACTOR_PREFIX}{replica_rank}"


def endpoint_names(names: list[str]) -> list[str]:
    """The names among ``names`` that serve ``speak``: stand-alone speech servers if any, else `hf` servers."""
    speech = sorted(n for n in names if _SPEECH_SERVER.match(n))
    return speech or sorted(n for n in names if _HF_SERVER.match(n))


def next_endpoint() -> ray.actor.ActorHandle:
    """A speaking actor, round robin over those found (looked up once per process)."""
    global _cycle
    with _lock:
        if _cycle is None:
            names = endpoint_names(list(ray.util.list_named_actors(all_namespaces=False)))  # names, this namespace
            if not names:
                raise RuntimeError(
                    "a row asks for output_modality 'audio' but no speech server runs: the rollout was started "
                    "without the speech stage (rollout.engine_kwargs.speech.enable is false, or the backend "
                    f"starts no {SPEECH_ACTOR_PREFIX}<replica> actors)"
                )
            _handles[:] = [ray.get_actor(n) for n in names]
            _cycle = itertools.cycle(_handles)
        return next(_cycle)
