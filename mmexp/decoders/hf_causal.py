"""Hugging Face causal language models as caption decoders, conditioned two ways.

* :class:`HFCrossAttentionDecoder`: the LM loaded with ``add_cross_attention=True``, as
  ``VisionEncoderDecoderModel`` builds its decoder: each block gets a new (randomly
  initialised) cross-attention sub-layer that reads the memory, projected to the LM's width.
* :class:`HFPrefixDecoder`: ClipCap (Mokady et al. 2021, arXiv 2111.09734): a mapping network
  turns the pooled memory into ``prefix_length`` vectors of the LM's embedding space, which
  precede the caption's embeddings; the LM itself is unchanged.

Generation uses transformers' ``generate`` by default; ``engine="mmexp"`` runs the shared
strategies of :mod:`mmexp.decoders.decoding` on the LM's key/value cache instead.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import torch
from torch import nn

from mmexp.decoders.base import CaptionDecoder, DecodingOptions, Memory
from mmexp.decoders.decoding import StepFunction, contract_ids, decode_memory
from mmexp.decoders.prefix import PrefixMapper
from mmexp.decoders.tokenizers import load_tokenizer
from mmexp.encoders.hub import hf_from_pretrained
from mmexp.utils.freezing import FROZEN_MARK

KEY = "model.decoder"
ENGINES = ("transformers", "mmexp")


def generate_options(options: DecodingOptions) -> dict[str, Any]:
    """Transformers' ``generate`` arguments of a strategy (its other settings left out)."""
    if options.strategy == "greedy":
        return {"do_sample": False, "num_beams": 1}
    if options.strategy == "beam":
        return {
            "do_sample": False,
            "num_beams": options.num_beams,
            "length_penalty": options.length_penalty,
            "early_stopping": True,
        }
    # top_k=0: the nucleus alone restricts sampling (generate's default top_k is 50).
    return {
        "do_sample": True,
        "top_p": options.top_p,
        "temperature": options.temperature,
        "top_k": 0,
    }


def real_memory_mask(mask: torch.Tensor) -> torch.Tensor:
    """``mask`` with rows that have no real vector opened up (attention over nothing is NaN)."""
    return mask | ~mask.any(dim=1, keepdim=True)


def new_modules(model: nn.Module, missing_keys: Collection[str]) -> list[str]:
    """The largest submodules of ``model`` whose parameters all were missing from its checkpoint.

    Whole modules (a block's cross-attention, its norm), so that their dropout follows the
    training mode while the pretrained rest is frozen.
    """
    missing = set(missing_keys)
    found: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(f"{outer}.") for outer in found):
            continue
        params = [f"{name}.{p}" if name else p for p, _ in module.named_parameters()]
        if params and all(p in missing for p in params):
            found.append(name)
    return found


class HFCausalDecoder(CaptionDecoder):
    """What both conditionings share: the LM, its tokenizer, teacher forcing, generation.

    Subclasses say how the memory enters the LM (:meth:`lm_inputs`).

    Args:
        memory_dim: Width of the memory vectors.
        name_or_path: Hub name (``gpt2``) or a ``save_pretrained`` folder with the model and
            its tokenizer.
        max_length: Longest target, bos and eos included.
        engine: ``transformers`` (its ``generate``) or ``mmexp`` (the shared strategies).
        **model_kwargs: Passed to ``AutoModelForCausalLM.from_pretrained``.
    """

    pretrained = True

    def __init__(
        self,
        memory_dim: int,
        name_or_path: str,
        max_length: int = 32,
        engine: str = "transformers",
        **model_kwargs: Any,
    ) -> None:
        super().__init__(memory_dim, max_length)
        if engine not in ENGINES:
            raise ValueError(f"{KEY}.engine must be one of {ENGINES}, got {engine!r}")
        from transformers import AutoModelForCausalLM

        key = f"{KEY}.name_or_path"
        self.name_or_path = str(name_or_path)
        self.engine = engine
        self.tokenizer = load_tokenizer(self.name_or_path, key)
        self.lm, loading = hf_from_pretrained(
            AutoModelForCausalLM.from_pretrained,
            self.name_or_path,
            key,
            output_loading_info=True,
            **model_kwargs,
        )
        # Layers the checkpoint lacks (new cross-attention): initialised here, not pretrained.
        self.new_lm_modules = new_modules(self.lm, loading["missing_keys"])
        vocab = self.lm.get_input_embeddings().num_embeddings
        if len(self.tokenizer) > vocab:
            raise ValueError(
                f"{KEY}: tokenizer of {self.name_or_path!r} has {len(self.tokenizer)} tokens but "
                f"the model embeds {vocab}; resize the model's embeddings and save it again"
            )
        self.hidden_size = self.lm.get_input_embeddings().embedding_dim

    def set_trainability(self, trainability: Any) -> None:
        """Apply a :class:`~mmexp.encoders.freezing.Trainability` to the pretrained LM.

        What is new here trains whatever the setting: the layers the checkpoint lacked
        (cross-attention) and the modules outside the LM (memory projection, prefix mapper).
        """
        self.lm = trainability.apply(self.lm)
        for name in self.new_lm_modules:
            self.lm.get_submodule(name).requires_grad_(True)
        live = getattr(self.lm, FROZEN_MARK, None)
        if live is not None:
            # They also follow the training mode (dropout) while the frozen LM stays in eval.
            setattr(self.lm, FROZEN_MARK, tuple(sorted({*live, *self.new_lm_modules})))
        self.train(self.training)

    def set_grad_checkpointing(self, enable: bool = True) -> bool:
        """Recompute the LM's activations in the backward pass; returns that it can."""
        if enable:
            self.lm.gradient_checkpointing_enable()
        else:
            self.lm.gradient_checkpointing_disable()
        return True

    def lm_inputs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, memory: Memory
    ) -> tuple[dict[str, Any], int]:
        """Arguments of the LM's forward for targets and memory, and the positions before them.

        Returns:
            The keyword arguments and how many positions precede ``input_ids`` (a prefix).
        """
        raise NotImplementedError  # pragma: no cover - abstract

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, memory: Memory
    ) -> torch.Tensor:
        """Next-token logits ``[B, L, V]`` aligned with ``input_ids`` (a prefix's left out)."""
        inputs, before = self.lm_inputs(input_ids, attention_mask, memory)
        logits = self.lm(**inputs, use_cache=False).logits
        return logits[:, before:]

    def stepper(self, memory: Memory) -> StepFunction:
        """Step function over the LM's key/value cache (the ``mmexp`` engine)."""
        return HFSteps(self, memory)

    @torch.no_grad()
    def generate(self, memory: Memory, options: DecodingOptions) -> torch.Tensor:
        """Generated ids ``[B, L]`` after bos (see :meth:`CaptionDecoder.generate`)."""
        if self.engine == "mmexp":
            return decode_memory(self.stepper, memory, options, self.special_ids)
        batch = memory.tokens.shape[0]
        bos = torch.full((batch, 1), self.bos_id, dtype=torch.long, device=memory.tokens.device)
        inputs, _ = self.lm_inputs(bos, torch.ones_like(bos, dtype=torch.bool), memory)
        settings = {
            "max_new_tokens": options.max_new_tokens,
            "pad_token_id": self.pad_id,
            "eos_token_id": self.eos_id,
            "bos_token_id": self.bos_id,
            **generate_options(options),
        }
        device = memory.tokens.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            # Sampling draws from the global generator: seeded here, restored after.
            torch.manual_seed(options.seed)
            out = self.lm.generate(**inputs, **settings)
        # Given input ids, generate returns them first; given embeddings, only new tokens.
        if "input_ids" in inputs:
            out = out[:, inputs["input_ids"].shape[1] :]
        return contract_ids(out, self.eos_id, self.pad_id)


class HFCrossAttentionDecoder(HFCausalDecoder):
    """A causal LM with new cross-attention layers over the memory.

    Args:
        memory_dim: Width of the memory vectors (projected to the LM's width if different).
        name_or_path: Hub name or local folder of the LM (GPT-2 style models have the
            ``add_cross_attention`` option).
        max_length: Longest target, bos and eos included.
        engine: ``transformers`` or ``mmexp`` generation.
    """

    def __init__(
        self,
        memory_dim: int,
        name_or_path: str = "gpt2",
        max_length: int = 32,
        engine: str = "transformers",
    ) -> None:
        super().__init__(memory_dim, name_or_path, max_length, engine, add_cross_attention=True)
        if not getattr(self.lm.config, "add_cross_attention", False):
            raise ValueError(
                f"{KEY}: {self.name_or_path!r} ({type(self.lm).__name__}) has no "
                "add_cross_attention option; use HFPrefixDecoder or another LM"
            )
        dim = self.hidden_size
        self.memory_proj = nn.Linear(memory_dim, dim) if memory_dim != dim else nn.Identity()

    def lm_inputs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, memory: Memory
    ) -> tuple[dict[str, Any], int]:
        """Targets as ids; the projected memory as ``encoder_hidden_states``."""
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask.long(),
            "encoder_hidden_states": self.memory_proj(memory.tokens),
            "encoder_attention_mask": real_memory_mask(memory.mask).long(),
        }, 0


class HFPrefixDecoder(HFCausalDecoder):
    """ClipCap: the pooled memory mapped to a prefix of LM embeddings.

    Args:
        memory_dim: Width of the memory vectors.
        name_or_path: Hub name or local folder of the LM.
        max_length: Longest target, bos and eos included.
        prefix_length: Prefix vectors ``k`` (ClipCap: 10).
        mapping: ``mlp`` or ``transformer`` (see :class:`~mmexp.decoders.prefix.PrefixMapper`).
        pooling: ``mean`` over the real memory vectors, or ``first`` (a CLS-style vector).
        clip_length: Vectors the transformer mapper makes of the pooled memory (ClipCap:
            ``prefix_length``); ``None`` means ``prefix_length``.
        mapper_depth: Layers of the transformer mapper (ClipCap: 8).
        mapper_heads: Its attention heads (ClipCap: 8).
        engine: ``transformers`` or ``mmexp`` generation.
    """

    def __init__(
        self,
        memory_dim: int,
        name_or_path: str = "gpt2",
        max_length: int = 32,
        prefix_length: int = 10,
        mapping: str = "mlp",
        pooling: str = "mean",
        clip_length: int | None = None,
        mapper_depth: int = 8,
        mapper_heads: int = 8,
        engine: str = "transformers",
    ) -> None:
        super().__init__(memory_dim, name_or_path, max_length, engine)
        self.prefix_length = prefix_length
        self.mapper = PrefixMapper(
            memory_dim,
            self.hidden_size,
            prefix_length,
            mapping=mapping,
            pooling=pooling,
            clip_length=clip_length,
            depth=mapper_depth,
            heads=mapper_heads,
        )

    def lm_inputs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, memory: Memory
    ) -> tuple[dict[str, Any], int]:
        """The prefix followed by the targets' embeddings, as ``inputs_embeds``."""
        prefix = self.mapper(memory)
        embedded = self.lm.get_input_embeddings()(input_ids)
        seen = torch.ones(prefix.shape[:2], dtype=torch.long, device=prefix.device)
        return {
            "inputs_embeds": torch.cat([prefix.to(embedded.dtype), embedded], dim=1),
            "attention_mask": torch.cat([seen, attention_mask.long()], dim=1),
        }, self.prefix_length


class HFSteps:
    """Generation steps over a Hugging Face LM's cache: the first feeds memory and bos."""

    def __init__(self, decoder: HFCausalDecoder, memory: Memory) -> None:
        self.decoder = decoder
        self.memory = memory
        self.cache: Any = None
        self.extra: dict[str, Any] = {}
        self.length = 0

    def __call__(self, last_ids: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, V]`` after ``last_ids`` ``[N]``."""
        ids = last_ids[:, None]
        if self.cache is None:
            inputs, _ = self.decoder.lm_inputs(
                ids, torch.ones_like(ids, dtype=torch.bool), self.memory
            )
            # What every later step passes again (the memory of cross-attention).
            self.extra = {k: v for k, v in inputs.items() if k.startswith("encoder_")}
        else:
            inputs = {"input_ids": ids, **self.extra}
        self.length += inputs.get("inputs_embeds", ids).shape[1]
        inputs["attention_mask"] = torch.ones(
            (ids.shape[0], self.length), dtype=torch.long, device=ids.device
        )
        out = self.decoder.lm(**inputs, cache=self.cache, use_cache=True)
        self.cache = out.cache
        return out.logits[:, -1]

    def reorder(self, rows: torch.Tensor) -> None:
        """Move rows (beam search): the LM's cache and the memory passed at each step."""
        self.cache.reorder_cache(rows)
        self.extra = {k: v.index_select(0, rows) for k, v in self.extra.items()}
        self.memory = Memory(
            self.memory.tokens.index_select(0, rows), self.memory.mask.index_select(0, rows)
        )
