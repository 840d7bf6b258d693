"""``episode_stream``: the export's rows made on the fly, split between DataLoader workers and ranks, and TRL
training on it with nothing on disk."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tvr_gym.data.export import export
from tvr_gym.data.streaming import episode_stream, stream_indices

from props import examples

TEXT = {"obs_mode": "text"}


def indices_of(rows) -> list[int]:
    return [row["index"] for row in rows]


def test_the_stream_is_the_export_row_for_row(tmp_path):
    from datasets import load_from_disk

    export("hf", "TVR-CrossView-v0", 6, tmp_path, seed=3, render_size=(64, 48), progress=False)
    exported = load_from_disk(str(tmp_path / "train"))
    streamed = list(episode_stream("TVR-CrossView-v0", seed=3, n=6, render_size=(64, 48)))
    assert len(streamed) == 6
    assert episode_stream("TVR-CrossView-v0", seed=3, n=6, render_size=(64, 48)).features == exported.features
    for a, b in zip(streamed, exported):
        assert {k: v for k, v in a.items() if k != "images"} == {k: v for k, v in b.items() if k != "images"}
        assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a["images"], b["images"]))


def test_an_endless_stream_keeps_making_fresh_rows_of_its_shard():
    stream = episode_stream("TVR-Basic-v0", seed=1, num_shards=4, **TEXT)
    first = [row for _, row in zip(range(11), stream)]
    assert indices_of(first) == list(range(0, 44, 4))  # shard 0: start + k * num_shards
    assert len({row["problem"] for row in first}) == 11  # fresh problems
    finite = indices_of(episode_stream("TVR-Basic-v0", seed=1, n=10, num_shards=4, **TEXT))
    assert finite == [0, 4, 8, 1, 5, 9, 2, 6, 3, 7]  # shard after shard, every row once


def test_dataloader_workers_share_the_rows_without_overlap():
    from torch.utils.data import DataLoader

    stream = episode_stream("TVR-Basic-v0", seed=2, n=18, num_shards=4, **TEXT)
    # spawned: a worker forked after this process rendered with gl hangs in Mesa's llvmpipe (docs/integrations.md)
    loader = DataLoader(stream, batch_size=None, num_workers=2, multiprocessing_context="spawn")
    seen = indices_of(loader)
    assert sorted(seen) == list(range(18))  # every row once


def test_ranks_split_the_stream_into_disjoint_deterministic_parts():
    from datasets.distributed import split_dataset_by_node

    def part(rank: int) -> list[int]:
        stream = episode_stream("TVR-Basic-v0", seed=2, start=5, n=20, num_shards=8, **TEXT)
        return indices_of(split_dataset_by_node(stream, rank=rank, world_size=2))

    parts = [part(0), part(1)]
    assert sorted(parts[0] + parts[1]) == list(range(5, 25))
    assert not set(parts[0]) & set(parts[1])
    assert part(0) == parts[0]  # the same seed, the same rows in the same place


@settings(max_examples=examples(200))
@given(st.integers(1, 12), st.integers(0, 50), st.integers(0, 60), st.data())
def test_stream_indices_deal_every_index_to_exactly_one_shard(num_shards, start, n, data):
    owner = data.draw(st.lists(st.integers(0, 3), min_size=num_shards, max_size=num_shards))  # shard -> worker
    parts = [[s for s in range(num_shards) if owner[s] == w] for w in range(4)]
    dealt = [list(stream_indices(p, num_shards, start, n)) for p in parts]
    assert sorted(i for d in dealt for i in d) == list(range(start, start + n))
    for part, indices in zip(parts, dealt):
        assert indices == sorted(indices)  # a reader sees its rows in order
        assert all((i - start) % num_shards in part for i in indices)
    assert list(stream_indices(list(range(num_shards)), num_shards, start, n)) == list(range(start, start + n))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"fmt": "trance"}, "format"),
        ({"n": -1}, "n"),
        ({"num_shards": 0}, "num_shards"),
        ({"env_id": "TVR-Interactive-v0"}, "streams as skyrl rows"),
        ({"obs_mode": "pixels"}, "obs_mode"),
    ],
)
def test_bad_arguments_fail_at_once(kwargs, message):
    with pytest.raises(ValueError, match=message):
        episode_stream(**kwargs)


@pytest.mark.usefixtures("torch_one_thread")
def test_trl_grpo_trains_on_a_stream_with_nothing_on_disk(tiny_dir, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import GRPOConfig, GRPOTrainer

    from tvr_gym.integrations import trl_reward

    rows = episode_stream("TVR-CrossView-v0", seed=7, render_size=(64, 48))  # endless
    model = AutoModelForImageTextToText.from_pretrained(tiny_dir, local_files_only=True)
    seen_pixels = []
    model.register_forward_pre_hook(lambda m, a, kw: seen_pixels.append("pixel_values" in kw), with_kwargs=True)
    config = GRPOConfig(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_generations=4, max_completion_length=8,
        learning_rate=1e-3, beta=0.0, max_steps=2, logging_steps=1, save_strategy="no", report_to="none",
        use_cpu=True, bf16=False, disable_tqdm=True, seed=0,
    )  # fmt: skip
    trainer = GRPOTrainer(
        model=model, reward_funcs=trl_reward("star"), args=config, train_dataset=rows,
        processing_class=AutoProcessor.from_pretrained(tiny_dir, local_files_only=True),
    )  # fmt: skip
    trainer.train()
    assert trainer.state.global_step == 2
    assert any(seen_pixels)
    assert not list((tmp_path / "out").rglob("*.parquet")) and not list((tmp_path / "out").rglob("*.arrow"))
