"""The checkers of notebook 09's exercises accept the solution and reject the typical mistakes."""

import numpy as np
import pytest

from dino_ref.exercises import (ExerciseFailed, check_ddp_loss_scale, check_micro_batch_weights,
                                check_pooled_mean)


def test_micro_batch_weights_accepts_the_solution():
    assert check_micro_batch_weights(lambda sizes: np.array(sizes) / sum(sizes))


@pytest.mark.parametrize("wrong", [
    lambda sizes: np.full(len(sizes), 1 / len(sizes)),               # 1 / n_micro
    lambda sizes: np.ones(len(sizes)),                                # plain sum of the means
    lambda sizes: np.array(sizes, dtype=float),                       # b_k, not b_k / B
], ids=["1/n_micro", "ones", "b_k"])
def test_micro_batch_weights_rejects_mistakes(wrong):
    with pytest.raises(ExerciseFailed, match="B_k / B"):
        check_micro_batch_weights(wrong)


def test_ddp_loss_scale_accepts_the_solution():
    assert check_ddp_loss_scale(lambda b_local, world, B: b_local * world / B)


@pytest.mark.parametrize("wrong", [
    lambda b_local, world, B: 1.0,                                    # a plain per-rank mean
    lambda b_local, world, B: b_local / B,                            # forgets DDP's 1/world
], ids=["no scaling", "b_local/B"])
def test_ddp_loss_scale_rejects_mistakes(wrong):
    with pytest.raises(ExerciseFailed, match="b_local \\* world / B"):
        check_ddp_loss_scale(wrong)


def test_pooled_mean_accepts_the_solution():
    def pooled_mean(shards):
        rows_sum = sum(shard.sum(axis=(0, 1)) for shard in shards)
        n_rows = sum(shard.shape[0] * shard.shape[1] for shard in shards)
        return rows_sum / n_rows
    assert check_pooled_mean(pooled_mean)


def test_pooled_mean_rejects_the_mean_of_means():
    with pytest.raises(ExerciseFailed, match="mean of per-shard means"):
        check_pooled_mean(lambda shards: np.mean([s.mean(axis=(0, 1)) for s in shards], axis=0))
