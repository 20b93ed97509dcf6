"""QLoRA (4- and 8-bit bases through bitsandbytes) and the bf16-mixed path, end to end on the selected accelerator."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from nlora_lightning import ContinualLightningModule, LoRAConfig, MethodConfig
from nlora_lightning.models import byte_tokenizer
from nlora_lightning.models.loading import random_init_config


@pytest.fixture(scope="module")
def bitsandbytes():
    """Only the quantized tests need bitsandbytes; the others run without it."""
    return pytest.importorskip("bitsandbytes")


@pytest.fixture(scope="module")
def saved_tiny_llama(tmp_path_factory):
    """A tiny Llama written to disk: quantization needs pretrained weights to load."""
    directory = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = byte_tokenizer()
    config = random_init_config({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                                 "num_attention_heads": 4, "num_key_value_heads": 2}, tokenizer)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def quantized_module(path, bits):
    return ContinualLightningModule(
        model_name_or_path=path, quantization={"bits": bits, "compute_dtype": "float32"},
        lora=LoRAConfig(r=2, alpha=8, dropout=0.0), methods=[MethodConfig("nlora_l1", 0.01)],
        evaluation={"mode": "rank"}, optimizer=lambda params: torch.optim.AdamW(params, lr=1e-2),
    )


@pytest.mark.parametrize("bits, layer_type", [(4, "Linear4bit"), (8, "Linear8bitLt")])
def test_quantized_base_trains_only_fp32_adapters(bitsandbytes, saved_tiny_llama, bits, layer_type):
    module = quantized_module(saved_tiny_llama, bits)
    module.configure_model()
    layer = next(iter(module.adapters.layers.values()))
    assert type(layer.base_layer).__name__ == layer_type
    assert layer.lora_A.dtype == torch.float32 and layer.lora_A.requires_grad
    assert not any(p.requires_grad for n, p in module.model.named_parameters() if "lora_" not in n)
    ids = torch.randint(3, 200, (2, 10))
    labels = ids.clone()
    labels[:, :6] = -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    out = module.task_forward(batch)
    loss = out.loss
    for weight, value in module.method_losses(batch, out).values():
        loss = loss + weight * value
    loss.backward()
    assert torch.isfinite(loss) and layer.lora_A.grad is not None


@pytest.mark.slow
def test_four_bit_sequence_fits(bitsandbytes, saved_tiny_llama, tiny, make_trainer, tmp_path):
    trainer = make_trainer(name="qlora")
    trainer.fit(quantized_module(saved_tiny_llama, 4), datamodule=tiny.data())
    metrics = json.loads((tmp_path / "qlora" / "cl_metrics.json").read_text())
    assert len(metrics["acc_matrix"]) == 2 and metrics["AA"] is not None


def test_merging_into_a_quantized_base_is_refused(saved_tiny_llama):
    with pytest.raises(ValueError, match="quantized base cannot be fully fine-tuned or merged"):
        ContinualLightningModule(model_name_or_path=saved_tiny_llama, quantization={"bits": 4}, consolidation="merge")


@pytest.mark.slow
def test_bf16_mixed_precision_sequence_fits(tiny, tiny_llama_init, make_trainer, tmp_path, accelerator):
    trainer = make_trainer(name="bf16", precision="bf16-mixed")
    module = tiny.module(tiny_llama_init, methods=[MethodConfig("nlora_l1", 0.01)])
    trainer.fit(module, datamodule=tiny.data())
    assert next(iter(module.adapters.layers.values())).lora_A.dtype == torch.float32  # adapters stay fp32 under autocast
    metrics = json.loads((tmp_path / "bf16" / "cl_metrics.json").read_text())
    assert metrics["AA"] is not None
