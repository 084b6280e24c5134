"""``python -m verl_audio.eval``: see ``verl_audio.eval.cli``."""

import sys

from verl_audio.eval.cli import main

if __name__ == "__main__":  # vLLM spawns processes that re-import the main module
    sys.exit(main())
