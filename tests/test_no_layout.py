"""A model built in a plain script (no `default_setup`) starts no process group or mesh:
its parameters are plain tensors, it trains by hand, and it computes what the same model
computes under a one-process layout (a mesh and process group, and still plain tensors:
nothing is split on one rank)."""
import subprocess
import sys
import textwrap

_SCRIPT = textwrap.dedent(
    """
    import torch
    import torch.distributed as torch_dist
    from torch.distributed.tensor import DTensor

    from libai.models import BertForPreTraining, GPTForPreTraining, VisionTransformer
    from libai.models.t5_model import T5ForPreTraining
    from libai.utils import distributed as dist

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 64, (2, 8), generator=gen)
    mask = torch.ones(2, 8, dtype=torch.long)
    square = torch.ones(2, 8, 8, dtype=torch.long)
    builders = {
        "gpt": (
            lambda: GPTForPreTraining(dict(hidden_layers=2, vocab_size=64, hidden_size=32, ffn_hidden_size=64,
                                           num_attention_heads=4, max_seq_length=16)),
            dict(input_ids=ids, labels=ids),
        ),
        "bert": (
            lambda: BertForPreTraining(dict(vocab_size=64, hidden_size=32, hidden_layers=2, num_attention_heads=4,
                                            intermediate_size=64, max_position_embeddings=16,
                                            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)),
            dict(input_ids=ids, attention_mask=mask, tokentype_ids=torch.zeros_like(ids),
                 ns_labels=torch.tensor([0, 1]), lm_labels=ids, loss_mask=torch.ones(2, 8)),
        ),
        "t5": (
            lambda: T5ForPreTraining(dict(vocab_size=64, hidden_size=32, hidden_layers=2, num_attention_heads=4,
                                          intermediate_size=64, max_position_embeddings=16,
                                          embedding_dropout_prob=0.0, hidden_dropout_prob=0.0,
                                          attention_probs_dropout_prob=0.0)),
            dict(encoder_input_ids=ids, decoder_input_ids=ids, encoder_attn_mask=square,
                 decoder_attn_mask=square.tril(), encoder_decoder_attn_mask=square, lm_labels=ids, loss_mask=torch.ones(2, 8)),
        ),
        "vit": (
            lambda: VisionTransformer(img_size=8, patch_size=4, in_chans=1, embed_dim=16, depth=1, num_heads=2,
                                      num_classes=3),
            dict(images=torch.randn(2, 1, 8, 8, generator=gen), labels=torch.tensor([0, 2])),
        ),
    }

    def one_step(name):
        build, batch = builders[name]
        torch.manual_seed(0)
        model = build()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        loss = sum(v for k, v in model(**batch).items() if "loss" in k)
        loss.backward()
        optimizer.step()
        weights = [p.full_tensor() if isinstance(p, DTensor) else p for p in model.parameters()]
        return model, loss.detach(), [w.detach().clone() for w in weights]

    plain = {}
    for name in builders:
        model, loss, weights = one_step(name)
        assert not torch_dist.is_initialized(), name
        assert not any(isinstance(p, DTensor) for p in model.parameters()), name
        plain[name] = (loss, weights)

    dist.setup_dist_util({}, device="cpu")
    for name, (loss, weights) in plain.items():
        model, mesh_loss, mesh_weights = one_step(name)
        assert torch_dist.is_initialized(), name
        assert not any(isinstance(p, DTensor) for p in model.parameters()), name
        torch.testing.assert_close(loss, mesh_loss, rtol=0, atol=0, msg=name)
        for a, b in zip(weights, mesh_weights):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    print("ok")
    """
)


def test_models_build_and_train_without_a_process_group_like_under_a_layout():
    result = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
