"""The README's HyperCLOVA X SEED Omni 8B steps, on a tiny twin of its checkpoint layout.

The twin has the Omni layout (`config.json` of `model_type: vlm` with the Llama text model under
`text_config`, text weights named `model.language_model.*` in shards beside audio and vision
tensors, a vocabulary padded past the tokenizer) and goes through the README's commands:
`clara-models extract-text`, `mlx_lm.convert -q`, then clara, and `clara-models import-clara`
for a checkpoint the reference code trained on that text model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

pytestmark = pytest.mark.filterwarnings("ignore:Already found a `peft_config`")
torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from clara.checkpoint import load_clara  # noqa: E402
from clara_cli.models import main as models_main  # noqa: E402
from tests import reference_twin as twin  # noqa: E402
from tests.tiny import TOKENIZER_FILES, build_tiny_tokenizer  # noqa: E402


def build_omni_twin(root: Path) -> tuple[Path, Path]:
    """(the Omni-layout folder, the HF text model it wraps)."""
    tok = build_tiny_tokenizer(root / "tok")
    text = twin.build_hf_twin(root / "text-hf", tok, "llama", extra_rows=24, seed=11)
    omni = root / "omni"
    omni.mkdir()
    text_cfg = json.loads((text / "config.json").read_text())
    config = {
        "architectures": ["HCXVisionV2ForCausalLM"],
        "model_type": "vlm",
        "hidden_size": text_cfg["hidden_size"],
        "text_config": text_cfg,
        "audio_config": {"model_type": "qwen2_audio_encoder", "d_model": 32},
        "vision_config": {"model_type": "qwen2_5_vl", "hidden_size": 32},
    }
    (omni / "config.json").write_text(json.dumps(config, indent=2))
    weights = {
        f"model.language_model.{k}": v for k, v in mx.load(str(text / "model.safetensors")).items()
    }
    names = sorted(weights)
    half = len(names) // 2
    shard1 = {n: weights[n] for n in names[:half]} | {
        "model.vision_model.patch.weight": mx.ones((4, 4))
    }
    shard2 = {n: weights[n] for n in names[half:]} | {
        "model.audio_model.conv1.weight": mx.ones((4,))
    }
    mx.save_safetensors(str(omni / "model-00001-of-00002.safetensors"), shard1, {"format": "pt"})
    mx.save_safetensors(str(omni / "model-00002-of-00002.safetensors"), shard2, {"format": "pt"})
    for name in TOKENIZER_FILES:
        shutil.copy(tok / name, omni / name)
    return omni, text


def test_readme_hcx_omni_steps_on_a_tiny_twin(tmp_path: Path, capsys) -> None:
    from mlx_lm import convert

    omni, text_hf = build_omni_twin(tmp_path)
    with pytest.raises(ValueError, match="vlm not supported"):  # why the extraction step exists
        convert(str(omni), mlx_path=str(tmp_path / "direct"))

    # 1. clara-models extract-text: the text model alone, weights unchanged
    text = tmp_path / "hcx-seed-omni-8b-text"
    assert models_main(["extract-text", str(omni), str(text)]) == 0
    assert json.loads((text / "config.json").read_text())["model_type"] == "llama"
    got = {k: v for f in text.glob("*.safetensors") for k, v in mx.load(str(f)).items()}
    want = mx.load(str(text_hf / "model.safetensors"))
    assert set(got) == set(want)
    assert all(mx.array_equal(got[k], want[k]).item() for k in want)
    assert models_main(["extract-text", str(omni), str(text)]) == 1  # refuses to overwrite

    # 2. mlx_lm.convert -q, 3. clara on it (here: the logits of the HF text model, 4-bit close)
    mlx_dir = tmp_path / "hcx-seed-omni-8b-text-4bit"
    convert(str(text), mlx_path=str(mlx_dir), quantize=True, q_group_size=32)
    cm = load_clara(mlx_dir, "none", dtype=None)
    ids = [0, 10, 20, 30, 40, 50]
    ours = np.array(cm.lm(mx.array([ids]))[0, -1])
    hf = twin.AutoModelForCausalLM.from_pretrained(text_hf, dtype=torch.float32)
    with torch.no_grad():
        theirs = hf(input_ids=torch.tensor([ids])).logits[0, -1].numpy()
    assert np.corrcoef(ours, theirs)[0, 1] > 0.9

    # 4. a reference-trained CLaRa checkpoint on this text model imports onto the 4-bit base
    src = tmp_path / "hcx-clara" / "compression-16"
    twin.build_reference(
        text, src, doc_max=64, rate=16, distinct=True, sep=True, stage="stage2", query=True
    )
    out = tmp_path / "hcx-16x"
    rc = models_main(["import-clara", str(src), "--base", str(mlx_dir), "--out", str(out)])
    assert rc == 0 and "imported e2e checkpoint" in capsys.readouterr().out
    cm = load_clara(mlx_dir, out, dtype=None)
    assert cm.compress(["The capital of Japan is Tokyo."]).shape == (1, 4, 64)
