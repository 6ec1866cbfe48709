"""The shared sarcasm training set validates clean against the embedded model's tokenizer, with
token counts equal to what the chat template produces."""

import json

import pytest

from afinar.data.validate import validate_file
from afinar.models import Catalog, load_tokenizer, render_ids

pytestmark = pytest.mark.integration


def test_sarcasm_train_is_clean_with_exact_counts(shared_dir, home):
    path = shared_dir / "datasets" / "sarcasm" / "train.jsonl"
    tok = load_tokenizer(Catalog().get("smollm2-135m-instruct"))
    r = validate_file(path, tok, max_seq_len=8192)
    assert r.ok, [str(e) for e in r.errors[:5]]
    assert r.n_examples == 26498 and r.format == "chat"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    lengths = [len(render_ids(tok, x["messages"], add_generation_prompt=False)) for x in rows]
    assert r.stats["total_tokens"] == sum(lengths)  # exact: the template's own token count
    assert r.stats["tokens_per_example"]["max"] == max(lengths)
    assert r.stats["trained_tokens_per_example"] == {
        "min": 2.0, "p5": 2.0, "median": 2.0, "mean": 2.0, "p95": 2.0, "max": 2.0}  # "0"/"1" + <|im_end|>
    assert r.stats["labels"] == {"0": 13886, "1": 12612}
    assert r.stats["default_epochs"] == 1  # 25,000 // 26,498 -> at least 1
