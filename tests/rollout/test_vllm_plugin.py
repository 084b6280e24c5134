"""The vLLM general plugin: vLLM's engine-core process never imports verl, so the talker-warning filter reaches it
through the ``vllm.general_plugins`` entry point, which vLLM loads first in each of its processes."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

WARNING = "must be `None` or an integer within the vocabulary"
#: a process as vLLM's engine core starts: its general plugins (ours only here), no verl, then an Omni config
PROCESS = """
import sys
from importlib.metadata import entry_points
if sys.argv[1] == "plugin":
    for ep in entry_points(group="vllm.general_plugins"):
        if ep.name == "verl_audio":
            ep.load()()
from transformers import Qwen2_5OmniTalkerConfig
Qwen2_5OmniTalkerConfig()
print("verl imported:", "verl" in sys.modules)
"""


def _run(mode: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROCESS, mode], capture_output=True, text=True, timeout=300)


def test_the_entry_point_is_installed() -> None:
    plugins = {ep.name: ep.value for ep in entry_points(group="vllm.general_plugins")}
    assert plugins.get("verl_audio") == "verl_audio.rollout.vllm.plugin:register"


def test_the_plugin_silences_the_talker_warnings_without_verl() -> None:
    without, with_plugin = _run("none"), _run("plugin")
    assert without.returncode == 0 and with_plugin.returncode == 0, without.stderr + with_plugin.stderr
    assert WARNING in without.stderr  # what the engine core printed before
    assert WARNING not in with_plugin.stderr
    assert "verl imported: False" in with_plugin.stdout  # the engine core stays free of verl
