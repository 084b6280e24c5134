"""``reward_curve.png``: the score and each reward component per training step, from ``metrics.jsonl``.

``python -m verl_audio.trainer.plot METRICS.jsonl OUT.png`` redraws it for any run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from verl_audio.trainer.metrics_log import finite, training_steps
from verl_audio.trainer.ppo_trainer import PREFIX
from verl_audio.trainer.summary import LEARNS_FROM_SCRATCH, reward_was_always_zero

#: verl's own per-step score (sequence score mean), drawn with the components
VERL_SCORE = "critic/score/mean"


def curves(metrics_file: str | Path) -> dict[str, tuple[list[int], list[float]]]:
    """``{name: (steps, values)}`` for verl's score and every ``reward/<name>/mean`` in the file."""
    steps = training_steps(metrics_file)
    names = sorted({key for data in steps.values() for key in data
                    if key == VERL_SCORE or (key.startswith(PREFIX) and key.endswith("/mean"))})
    out = {}
    for name in names:
        points = [(step, data[name]) for step, data in steps.items() if finite(data.get(name))]
        if points:
            label = "score (verl)" if name == VERL_SCORE else name.removeprefix(PREFIX).removesuffix("/mean")
            out[label] = ([p[0] for p in points], [float(p[1]) for p in points])
    return out


def plot_reward_curve(metrics_file: str | Path, out: str | Path) -> Path:
    """Draw the curves of ``metrics_file`` into ``out`` (PNG); raise if there is no training step."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    data = curves(metrics_file)
    if not data:
        raise ValueError(f"{metrics_file} has no training step with reward metrics to plot")
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, (steps, values) in data.items():
        ax.plot(steps, values, marker="o", label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    if reward_was_always_zero(training_steps(metrics_file)):
        ax.text(0.5, 0.55, "reward 0 at every step: the model never wrote the answer format\n"
                f"the rules reward (a random model); a run that learns: {LEARNS_FROM_SCRATCH}",
                transform=ax.transAxes, ha="center", va="center", fontsize=8, color="dimgray", wrap=True)
    ax.set_xlabel("training step")
    ax.set_ylabel("mean over the step's responses")
    ax.set_title(Path(metrics_file).parent.name)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return Path(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("metrics", help="metrics.jsonl of a run")
    parser.add_argument("out", help="PNG to write")
    args = parser.parse_args(argv)
    print(plot_reward_curve(args.metrics, args.out))


if __name__ == "__main__":
    main()
