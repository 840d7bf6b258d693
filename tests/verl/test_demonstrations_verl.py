"""verl's ``MultiTurnSFTDataset`` reads tvr-gym's interactive demonstrations (``tvr-gym export --format verl
--demonstrations``): every image reaches the processor, and the loss falls on the solver's turns only."""

from __future__ import annotations

import pandas as pd
import pytest

verl = pytest.importorskip("verl", reason="the verl tests run in the verl venv: make verl-env (docs/integrations.md)")

from tvr_gym.data.export import export  # noqa: E402

INTERACTIVE_ID = "TVR-Interactive-v0"


@pytest.mark.parametrize("obs_mode", ["image", "text"])
def test_multiturn_sft_dataset_trains_exactly_the_solver_turns(model_dir, tmp_path, obs_mode):
    from transformers import AutoProcessor, AutoTokenizer
    from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

    out = tmp_path / "demos"
    export("verl", INTERACTIVE_ID, 3, out, seed=1, progress=False, demonstrations="oracle", setting="event",
           render_size=(64, 48), renderer="numpy", obs_mode=obs_mode)  # fmt: skip
    parquet = out / "train.parquet"
    frame = pd.read_parquet(parquet)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True) if obs_mode == "image" else None
    dataset = MultiTurnSFTDataset(str(parquet), tokenizer, {"max_length": 8192, "pad_mode": "no_padding"}, processor)
    assert len(dataset) == 3
    for k in range(3):
        item = dataset[k]  # verl's own sanity check: the turns tokenized one by one equal the whole chat's template
        messages = frame["messages"][k]
        turns = [m["content"] for m in messages if m["role"] == "assistant"]
        trained = tokenizer.decode(item["input_ids"][item["loss_mask"].bool()])
        assert trained.replace("<|im_end|>", "").split() == " ".join(turns).split()  # the turns, in order, only
        if obs_mode == "image":
            assert len(item["multi_modal_inputs"]["image_grid_thw"]) == len(frame["images"][k]) >= 3
        else:
            assert "multi_modal_inputs" not in item
