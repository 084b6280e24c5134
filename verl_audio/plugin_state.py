"""Is verl-audio's plugin active in this process? Checked before anything trains, evaluates or serves.

verl loads plugins from its ``verl.plugins`` entry points at ``import verl``, logs a failed load at debug
level only, and ``VERL_USE_EXTERNAL_PLUGINS`` (``none``, or a comma-separated list of entry-point names) can
leave plugins out altogether. Without verl-audio's plugin verl's ``hf_processor`` returns None for audio
checkpoints and audio prompts silently become text prompts. ``require_plugin(who)`` turns that into an
error at start that names the reason and the fix.
"""

from __future__ import annotations

import logging
import os
import sys

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "verl.plugins"
ENTRY_POINT_NAME = "verl_audio"
POLICY_ENV = "VERL_USE_EXTERNAL_PLUGINS"
PLUGIN_MODULE = "verl_audio.plugin"


class PluginNotActive(RuntimeError):
    """verl-audio's registrations are not in place in this process."""


def plugin_active() -> bool:
    """Whether ``verl_audio.plugin`` ran to its end in this process."""
    module = sys.modules.get(PLUGIN_MODULE)
    return bool(module is not None and getattr(module, "COMPLETE", False))


def excluded_by_policy() -> str | None:
    """Why ``VERL_USE_EXTERNAL_PLUGINS`` keeps verl from loading this plugin, or None when it does not."""
    raw = os.environ.get(POLICY_ENV, "auto")
    policy = raw.strip().lower()
    if policy == "auto":
        return None
    if policy == "none":
        return f"{POLICY_ENV}=none turns verl's plugin loading off"
    if ENTRY_POINT_NAME not in {name.strip() for name in policy.split(",")}:
        return f"{POLICY_ENV}={raw!r} does not name {ENTRY_POINT_NAME!r}"
    return None


def _load_failure() -> tuple[str, str] | None:
    """(reason, fix) when loading the entry point fails now; None when it loads (the plugin is then active)."""
    from importlib.metadata import entry_points

    found = list(entry_points(group=ENTRY_POINT_GROUP, name=ENTRY_POINT_NAME))
    if not found:
        return (f"no {ENTRY_POINT_GROUP} entry point named {ENTRY_POINT_NAME!r} is installed in {sys.prefix}",
                "install verl-audio into this environment: bash scripts/setup_env.sh (or pip install -e .)")
    try:
        found[0].load()
    except Exception as err:  # noqa: BLE001 - reported: it is the error verl logged at debug level only
        return (f"loading it fails with {type(err).__name__}: {err} (verl logs this at debug level only)",
                f"fix that error; `python -c 'import {PLUGIN_MODULE}'` shows its traceback")
    return None


def require_plugin(who: str) -> None:
    """Raise ``PluginNotActive`` naming the reason and the fix unless the plugin is active here (``who``: the caller)."""
    import verl  # noqa: F401  (loads the entry points, once per process)

    reason, fix = excluded_by_policy(), f"unset {POLICY_ENV}, or list {ENTRY_POINT_NAME} in it"
    if reason is None:
        if plugin_active():
            return
        failure = _load_failure()
        if failure is None and plugin_active():
            logger.warning("verl-audio: the plugin was not active after `import verl`; loaded it now")
            return
        reason, fix = failure or ("it did not run to its end", "reinstall verl-audio (bash scripts/setup_env.sh)")
    raise PluginNotActive(
        f"{who}: verl-audio's plugin ({ENTRY_POINT_GROUP} entry point {ENTRY_POINT_NAME!r}) is not active in this "
        f"process: {reason}. Without it audio checkpoints get no processor and audio prompts would silently become "
        f"text prompts, so nothing is started. Fix: {fix}.")
