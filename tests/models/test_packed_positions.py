"""verl's packing of (4, L) position ids (patch 12): right whether or not the sequences share a length."""

from __future__ import annotations

import pytest
import torch
import verl  # noqa: F401  (loads the plugin, which applies the patch)
from tensordict import TensorDict
from verl.workers.utils import padding

from verl_audio import patches


def _batch(lengths: list[int], width: int = 8) -> TensorDict:
    """Left-right padded prompt+response rows as verl's trainer holds them, with (4, L) TMRoPE-style positions."""
    bs = len(lengths)
    mask = torch.zeros(bs, width, dtype=torch.long)
    positions = torch.zeros(bs, 4, width, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, width - n :] = 1
        positions[i, :, width - n :] = torch.arange(n) + 100 * torch.arange(4).unsqueeze(1)
    ids = torch.arange(bs * width).reshape(bs, width)
    return TensorDict({"input_ids": ids, "attention_mask": mask, "position_ids": positions,
                       "response_mask": mask[:, -2:]}, batch_size=bs)  # fmt: skip


@pytest.mark.parametrize("lengths", [[5, 5], [5, 3, 6], [7, 7, 7, 7]])
def test_packed_positions_are_four_rows_over_every_token(lengths: list[int]) -> None:
    data = padding.left_right_2_no_padding(_batch(lengths))
    values = data["position_ids"].values()
    assert values.shape == (4, sum(lengths))  # what the engine unsqueezes to (4, 1, total_nnz)
    assert data["input_ids"].values().shape == (sum(lengths),)
    starts = torch.tensor([0, *lengths]).cumsum(0)
    for i, n in enumerate(lengths):
        expected = torch.arange(n) + 100 * torch.arange(4).unsqueeze(1)
        assert torch.equal(values[:, starts[i] : starts[i] + n], expected)


def test_verl_alone_packs_equal_lengths_on_the_wrong_axis() -> None:
    # if this starts failing, verl has fixed its packing and patch 12 can go
    original = getattr(padding.left_right_2_no_padding, patches.ORIGINAL_ATTR)
    assert original(_batch([5, 5]))["position_ids"].values().shape == (8, 5)
    assert original(_batch([5, 3]))["position_ids"].values().shape == (4, 8)
