import pytest
import torch

from submission.errors import HarnessError
from submission.sampling import support_indices


def test_support_set_follows_the_vand_rule():
    torch.manual_seed(42)
    expected = torch.randperm(28)[:4].tolist()
    assert support_indices(28, 4, 42) == expected


def test_support_sets_are_nested_over_k_for_one_seed():
    eight = support_indices(20, 8, 0)
    for k in (1, 2, 4):
        assert support_indices(20, k, 0) == eight[:k]


def test_different_seeds_draw_different_sets():
    assert support_indices(50, 8, 42) != support_indices(50, 8, 1234)


@pytest.mark.parametrize("k", [0, 29])
def test_k_outside_the_pool_is_an_error(k):
    with pytest.raises(HarnessError, match="--shots"):
        support_indices(28, k, 42)
