"""The Qwen-style chat template written into the tiny checkpoints.

It renders ``system``/``user``/``assistant`` turns as ``<|im_start|>ROLE\\n...<|im_end|>\\n``. A turn's
content is either a string or a list of items: ``{"type": "text", "text": ...}``,
``{"type": "audio", ...}`` (rendered ``<|audio_bos|><|AUDIO|><|audio_eos|>``: ONE ``<|AUDIO|>`` per clip,
which the Omni processor expands to one placeholder per audio-encoder output frame), and, for
completeness, ``image``/``video`` items (``<|vision_bos|><|IMAGE|><|vision_eos|>`` / ``...<|VIDEO|>...``).
Unlike the released Qwen2.5-Omni template no default system turn is added: callers choose the system
prompt. ``add_generation_prompt`` appends ``<|im_start|>assistant\\n``.
"""

from __future__ import annotations

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'audio' or 'audio' in item or 'audio_url' in item -%}"
    "{{- '<|audio_bos|><|AUDIO|><|audio_eos|>' -}}"
    "{%- elif item['type'] == 'image' or 'image' in item or 'image_url' in item -%}"
    "{{- '<|vision_bos|><|IMAGE|><|vision_eos|>' -}}"
    "{%- elif item['type'] == 'video' or 'video' in item -%}"
    "{{- '<|vision_bos|><|VIDEO|><|vision_eos|>' -}}"
    "{%- elif item['type'] == 'text' -%}"
    "{{- item['text'] -}}"
    "{%- else -%}"
    "{{- raise_exception('unsupported content item type: ' + item['type']) -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- endif -%}"
)
