"""Hugging Face causal LM decoders on a tiny GPT-2 saved to disk."""

import pytest
import torch

from mmexp.decoders.base import DecodingOptions, Memory
from mmexp.decoders.hf_causal import HFCrossAttentionDecoder, HFPrefixDecoder
from mmexp.decoders.prefix import PrefixMapper
from tests.helpers.tiny_decoders import write_tiny_gpt2

MEMORY_DIM = 24
KINDS = {
    "cross_attention": (HFCrossAttentionDecoder, {}),
    "prefix_mlp": (HFPrefixDecoder, {"prefix_length": 3}),
    "prefix_transformer": (
        HFPrefixDecoder,
        {"prefix_length": 3, "mapping": "transformer", "mapper_depth": 2, "mapper_heads": 2},
    ),
}


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    # Wide random weights: the choices depend on the inputs and rows end at varied steps.
    return write_tiny_gpt2(tmp_path_factory.mktemp("gpt2"), init_std=0.5)


def make(gpt2_dir, kind: str, **options):
    cls, settings = KINDS[kind]
    torch.manual_seed(1)
    return cls(MEMORY_DIM, str(gpt2_dir), max_length=12, **settings, **options).eval()


def make_memory(batch: int = 6) -> Memory:
    generator = torch.Generator().manual_seed(0)
    mask = torch.ones(batch, 5, dtype=torch.bool)
    mask[0, 2:] = False
    return Memory(torch.randn(batch, 5, MEMORY_DIM, generator=generator), mask)


def targets(decoder, captions):
    batch = decoder.target_processor().collate(captions)
    return batch["input_ids"], batch["attention_mask"]


CAPTIONS = ["a red square", "the big blue circle left", "small shape"] * 2


@pytest.mark.parametrize("kind", KINDS)
def test_logits_are_aligned_with_the_input_ids(gpt2_dir, kind):
    decoder, memory = make(gpt2_dir, kind), make_memory()
    ids, mask = targets(decoder, CAPTIONS)
    logits = decoder(ids, mask, memory)
    assert logits.shape == (*ids.shape, len(decoder.tokenizer))
    changed = ids.clone()
    changed[:, 3] = (ids[:, 3] + 1) % len(decoder.tokenizer)
    after = decoder(changed, mask, memory)
    # Position t reads the targets up to t: a prefix offset would leave position 3 unchanged.
    torch.testing.assert_close(after[:, :3], logits[:, :3])
    assert not torch.allclose(after[:, 3], logits[:, 3], atol=1e-4)


def argmax_loop(decoder, memory: Memory, steps: int) -> list[list[int]]:
    """Greedy decoding by re-running teacher forcing on the growing prefix."""
    ids = torch.full((memory.tokens.shape[0], 1), decoder.bos_id)
    with torch.no_grad():
        for _ in range(steps):
            logits = decoder(ids, torch.ones_like(ids, dtype=torch.bool), memory)
            ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    rows = []
    for row in ids[:, 1:].tolist():
        rows.append(row[: row.index(decoder.eos_id) + 1] if decoder.eos_id in row else row)
    return rows


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_generation_is_the_argmax_of_the_model(gpt2_dir, kind):
    decoder, memory = make(gpt2_dir, kind), make_memory()
    generated = decoder.generate(memory, DecodingOptions(strategy="greedy", max_new_tokens=8))
    expected = argmax_loop(decoder, memory, 8)
    width = max(len(row) for row in expected)
    assert generated.shape == (len(expected), width)
    for row, want in zip(generated.tolist(), expected, strict=True):
        assert row == want + [decoder.pad_id] * (width - len(want))
    assert width > 1


def cut(decoder, ids: torch.Tensor) -> list[list[int]]:
    """Rows up to and including their first eos."""
    eos = decoder.eos_id
    return [row[: row.index(eos) + 1] if eos in row else row for row in ids.tolist()]


def beam_scores(decoder, memory: Memory, ids: torch.Tensor, length_penalty: float) -> list[float]:
    """``sum log p / length ** length_penalty`` of each generated row, by teacher forcing."""
    scores = []
    for b, row in enumerate(cut(decoder, ids)):
        full = torch.tensor([[decoder.bos_id, *row]])
        one = Memory(memory.tokens[b : b + 1], memory.mask[b : b + 1])
        with torch.no_grad():
            logprobs = decoder(full, torch.ones_like(full, dtype=torch.bool), one).log_softmax(-1)
        total = logprobs[0, :-1].gather(-1, full[0, 1:, None]).sum().item()
        scores.append(total / len(row) ** length_penalty)
    return scores


@pytest.mark.parametrize("kind", KINDS)
def test_shared_greedy_decoding_agrees_with_transformers_generate(gpt2_dir, kind):
    memory = make_memory()
    options = DecodingOptions(strategy="greedy", max_new_tokens=8)
    theirs = make(gpt2_dir, kind).generate(memory, options)
    assert torch.equal(make(gpt2_dir, kind, engine="mmexp").generate(memory, options), theirs)


@pytest.mark.parametrize("kind", KINDS)
def test_shared_beam_search_ranks_at_least_as_high_as_transformers(gpt2_dir, kind):
    # transformers (early_stopping=True) stops once a sample has num_beams finished
    # hypotheses; the shared search goes on while a live beam can still win, from the same
    # beams: its best hypothesis ranks at least as high, and often is the same one.
    memory = make_memory()
    options = DecodingOptions(strategy="beam", num_beams=3, max_new_tokens=8)
    decoder = make(gpt2_dir, kind)
    theirs = decoder.generate(memory, options)
    ours = make(gpt2_dir, kind, engine="mmexp").generate(memory, options)
    ours_scores = beam_scores(decoder, memory, ours, options.length_penalty)
    their_scores = beam_scores(decoder, memory, theirs, options.length_penalty)
    for mine, other in zip(ours_scores, their_scores, strict=True):
        assert mine >= other - 1e-5
    same = [a == b for a, b in zip(cut(decoder, ours), cut(decoder, theirs), strict=True)]
    assert sum(same) >= 2


def test_nucleus_generation_is_seeded_and_leaves_the_global_generator_alone(gpt2_dir):
    decoder, memory = make(gpt2_dir, "prefix_mlp"), make_memory()

    def sample(seed):
        options = DecodingOptions(
            strategy="nucleus", top_p=0.95, temperature=2.0, seed=seed, max_new_tokens=8
        )
        return decoder.generate(memory, options)

    state = torch.get_rng_state()
    first = sample(0)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(99)
    assert torch.equal(sample(0), first)
    assert not torch.equal(sample(1), first)


def test_cross_attention_layers_are_new_and_read_the_memory(gpt2_dir):
    decoder, memory = make(gpt2_dir, "cross_attention"), make_memory()
    assert decoder.lm.config.add_cross_attention
    cross = [name for name, _ in decoder.lm.named_parameters() if "crossattention" in name]
    assert len(cross) == 2 * 6  # two blocks: query, key-value and output weights and biases
    ids, mask = targets(decoder, CAPTIONS)
    base = decoder(ids, mask, memory)
    noisy = memory.tokens.clone()
    noisy[0, 2:] = 50.0  # masked in sample 0
    torch.testing.assert_close(decoder(ids, mask, Memory(noisy, memory.mask)), base)
    moved = memory.tokens.clone()
    moved[:, 0] += 1.0
    assert not torch.allclose(decoder(ids, mask, Memory(moved, memory.mask)), base, atol=1e-4)


@pytest.mark.parametrize("mapping", ["mlp", "transformer"])
def test_prefix_mapper_makes_prefix_length_lm_embeddings(mapping):
    mapper = PrefixMapper(MEMORY_DIM, 32, 5, mapping=mapping, clip_length=3, depth=2, heads=2)
    memory = make_memory(batch=4)
    prefix = mapper(memory)
    assert prefix.shape == (4, 5, 32)
    if mapping == "mlp":  # ClipCap: d -> h*k/2 -> h*k
        assert [layer.out_features for layer in mapper.mlp[::2]] == [80, 160]
    else:
        assert mapper.constants.shape == (5, 32) and mapper.linear.out_features == 3 * 32
    # Mean pooling reads only the real memory vectors.
    noisy = memory.tokens.clone()
    noisy[0, 2:] = 50.0
    torch.testing.assert_close(mapper(Memory(noisy, memory.mask)), prefix)
    assert not torch.allclose(mapper(Memory(memory.tokens * 2, memory.mask)), prefix)


def test_first_vector_pooling_reads_only_the_first_vector():
    mapper = PrefixMapper(MEMORY_DIM, 32, 2, pooling="first")
    memory = make_memory(batch=2)
    later = memory.tokens.clone()
    later[:, 1:] = 0.0
    torch.testing.assert_close(mapper(Memory(later, memory.mask)), mapper(memory))


def test_decoders_are_pretrained_and_decode_to_text(gpt2_dir):
    decoder = make(gpt2_dir, "cross_attention")
    assert decoder.pretrained and make(gpt2_dir, "prefix_mlp").pretrained
    words = decoder.tokenizer.convert_tokens_to_ids(["a", "red", "square"])
    ids = torch.tensor([[*words, decoder.eos_id, decoder.pad_id], [words[0]] * 5])
    assert decoder.decode(ids) == ["a red square", "a a a a a"]


def test_unknown_engine_is_refused(gpt2_dir):
    with pytest.raises(ValueError, match="engine"):
        make(gpt2_dir, "prefix_mlp", engine="beam")


def trainable(module) -> set[str]:
    return {name for name, p in module.named_parameters() if p.requires_grad}


def test_a_frozen_lm_keeps_its_new_layers_training(gpt2_dir):
    from mmexp.encoders.freezing import Trainability

    decoder = make(gpt2_dir, "cross_attention")
    assert decoder.new_lm_modules == [
        f"transformer.h.{i}.{part}" for i in (0, 1) for part in ("crossattention", "ln_cross_attn")
    ]
    decoder.set_trainability(Trainability("frozen", key="model.decoder"))
    live = trainable(decoder)
    assert live and all("cross" in name or name.startswith("memory_proj") for name in live)
    assert {"memory_proj.weight", "lm.transformer.h.1.crossattention.q_attn.weight"} <= live
    decoder.train()
    assert not decoder.lm.training and not decoder.lm.transformer.h[0].attn.training
    assert decoder.lm.transformer.h[0].crossattention.training

    prefix = make(gpt2_dir, "prefix_mlp")
    prefix.set_trainability(Trainability("frozen", key="model.decoder"))
    assert trainable(prefix) == {name for name, _ in prefix.mapper.named_parameters("mapper")}


def test_lora_on_the_lm_trains_adapters_and_new_layers_only(gpt2_dir):
    pytest.importorskip("peft")
    from mmexp.encoders.freezing import Trainability

    decoder = make(gpt2_dir, "cross_attention")
    decoder.set_trainability(Trainability(lora={"r": 2, "target_modules": ["c_attn"]}))
    live = trainable(decoder)
    assert any("lora_" in name and ".attn." in name for name in live)
    assert not any(".attn." in name and "lora_" not in name for name in live)
    assert "lm.transformer.wte.weight" not in live
    assert any("crossattention.q_attn" in name for name in live)
