"""Reference outputs of clara (MLX, float32) for train_torch.py --check: two documents'
memories and MSE through the compressor, one generator prompt's answer logits, one query."""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import clara  # noqa: E402,F401
from clara import prompt  # noqa: E402
from clara.checkpoint import load_clara  # noqa: E402
from training.batches import (  # noqa: E402
    answer_logits,
    collate_generator,
    generator_embeddings,
    generator_example,
)
from training.losses import masked_ce_sum, memory_mse  # noqa: E402

cm = load_clara(dtype="float32")
docs_text = [
    "The Eiffel Tower was completed in 1889 for the World's Fair in Paris. Gustave Eiffel's company built it.",
    "Python's assert statement raises AssertionError when its expression is false; it is skipped under -O.",
]
ids = cm.tokenize(docs_text)
enc = cm.encode_tokens(ids, "compressor")
mse = memory_mse(enc.memory, enc.hidden, enc.text_mask)
ex = generator_example(
    cm, prompt.answer_messages("When was the tower completed?", prompt.background(1)), "In 1889.", 1
)
batch = collate_generator([ex], cm.n_mem, 1)
emb = generator_embeddings(cm, batch, enc.memory[:1][None])
with cm.adapter("generator"):
    logits = answer_logits(cm, emb, batch.loss_pos)
ce = masked_ce_sum(logits, batch.targets, batch.loss_mask) / batch.n_tokens
q = cm.encode_tokens(ids[:1], "query").memory
np.savez(
    sys.argv[1],
    docs=json.dumps(ids),
    memory=np.array(enc.memory),
    mse=np.array(mse),
    tokens=np.array(ex.tokens),
    slots=np.array(ex.slots),
    n_prompt=ex.n_prompt,
    logits=np.array(logits[0]),
    ce=np.array(ce),
    query=np.array(q),
    bos=cm.tokenizer.bos_token_id,
    eos=cm.tokenizer.eos_token_id,
)
print("ok", ce.item())
