"""The transformers engine of a real PRM (`prm/engine=hf`, conf/prm/engine/hf.yaml): any device, any family.

* All of a solution's new step scores from one pass over its tokens (the family reads them, `token_scores`).
* Batches built by token budget: sequences sorted by length, a batch holds as many as fit in
  `prm.engine.batch_tokens` counting padding (longest x count), so memory stays flat whatever the mix of lengths.
* With `prm.engine.enable_prefix_caching` (the default) the candidates of one call that share a token prefix (a
  parent's children; in the first iteration, a problem's prompt) are scored on top of that prefix's KV cache: the
  prefixes run once (several groups per forward pass), then each member's remaining tokens run in batches whose cache
  rows are copies of its group's (tts/prms/prefix_groups.py picks the groups). Nothing is kept across calls: a
  parent's tokens are computed once per call, not once per search.
* `stats.tokens` counts every token given to the model, `stats.cached_tokens` those of a prefix shared within a call.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

from tts.config.schema import Config, PRMEngineConfig
from tts.prms.family import Encoded, PRMEngine, PRMFamily
from tts.prms.prefix_groups import PrefixGroup, plan_prefix_groups

log = logging.getLogger(__name__)


@dataclass
class HFPRMEngineConfig(PRMEngineConfig):
    """transformers on any device: the checkpoint loaded with the Auto class its family names."""

    device: str = "auto"  # cuda when available, else cpu; cuda:1 puts the PRM on a second GPU
    batch_tokens: int = 8192  # padded tokens per forward pass (longest x count); bounds activation memory

    def check(self, run: Config) -> None:
        super().check(run)
        self.require(self.batch_tokens >= 1, "batch_tokens", f"must be >= 1, got {self.batch_tokens}")

    def needs(self) -> Optional[tuple[str, str]]:
        return ("transformers", "tts[hf]")


def token_budget_batches(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Indices grouped so that (longest in batch) x (batch size) <= batch_tokens; a longer sequence goes alone."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        width = max(longest, lengths[i])
        if current and width * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current, longest = [], 0
            width = lengths[i]
        current.append(i)
        longest = width
    if current:
        batches.append(current)
    return batches


class HFPRMEngine(PRMEngine):
    """A loaded transformers model and the forward passes that score a family's inputs on it."""

    def __init__(self, config: HFPRMEngineConfig, model: Any, device: str = "cpu") -> None:
        self.config = config
        self.model = model
        self.device = device
        self.forward_calls = 0

    def score(
        self, family: PRMFamily, problems: list[str], encoded: list[Encoded], known: list[int]
    ) -> list[list[float]]:
        family.stats.tokens += sum(len(e.ids) for e in encoded)
        if self.config.enable_prefix_caching and self._cache_keyword(family):
            return self._score_shared(family, problems, encoded, known)
        return [scores[done:] for scores, done in zip(self._score_whole(family, encoded), known)]

    def _score_whole(self, family: PRMFamily, encoded: list[Encoded]) -> list[list[float]]:
        """Every solution whole, batched by token budget."""
        results: list[list[float]] = [[] for _ in encoded]
        for batch in token_budget_batches([len(e.ids) for e in encoded], self.config.batch_tokens):
            ids, mask = right_padded(family.tokenizer, [encoded[i].ids for i in batch])
            scores = self._forward(family, ids, mask)
            for row, i in enumerate(batch):
                results[i] = [float(scores[row, p]) for p in encoded[i].positions]
        return results

    def _score_shared(
        self, family: PRMFamily, problems: list[str], encoded: list[Encoded], known: list[int]
    ) -> list[list[float]]:
        """Scores of the steps from `known[i]` on, every token prefix shared within a problem's candidates computed
        once; a candidate that shares too little with the others is scored whole."""
        groups = plan_prefix_groups(problems, [e.ids for e in encoded])
        results: list[list[float]] = [[] for _ in encoded]
        alone = [g.members[0] for g in groups if len(g.members) == 1]
        for i, scores in zip(alone, self._score_whole(family, [encoded[i] for i in alone])):
            results[i] = scores[known[i] :]
        shared = [g for g in groups if len(g.members) > 1]
        for batch in token_budget_batches([g.shared for g in shared], self.config.batch_tokens):
            self._score_on_prefixes(family, [shared[k] for k in batch], encoded, known, results)
        return results

    def _score_on_prefixes(
        self,
        family: PRMFamily,
        groups: list[PrefixGroup],
        encoded: list[Encoded],
        known: list[int],
        results: list[list[float]],
    ) -> None:
        """The groups' shared prefixes in one pass that fills a KV cache (row k: group k, right-padded to the
        longest), then every member's remaining tokens on top of it; a step read-out inside the shared prefix (a
        member that is itself a prefix of the others) comes from the prefix pass."""
        from transformers import DynamicCache

        prefix_ids, prefix_mask = right_padded(
            family.tokenizer, [encoded[g.members[0]].ids[: g.shared] for g in groups]
        )
        cache = DynamicCache(config=family.cache_module(self.model).config)
        prefix_scores = self._forward(family, prefix_ids, prefix_mask, cache=cache)
        family.stats.cached_tokens += sum((len(g.members) - 1) * g.shared for g in groups)
        suffix_scores = self._score_suffixes(family, groups, encoded, cache, prefix_mask)
        for k, g in enumerate(groups):
            for i in g.members:
                results[i] = [
                    float(prefix_scores[k, p] if p < g.shared else suffix_scores[i][p - g.shared])
                    for p in encoded[i].positions[known[i] :]
                ]

    def _score_suffixes(
        self, family: PRMFamily, groups: list[PrefixGroup], encoded: list[Encoded], cache: Any, prefix_mask: Any
    ) -> dict:
        """Per-token scores of each member's tokens after its group's prefix, in token-budget batches (counting the
        cached prefix width x rows), each over a copy of the cache rows of its members' groups. The attention mask
        covers prefix (its padding masked) plus suffix, and position ids go on from the member's own prefix length,
        so every token sees exactly what a whole-sequence pass shows it."""
        import copy

        import torch

        rows = [(k, i) for k, g in enumerate(groups) for i in g.members if len(encoded[i].ids) > g.shared]
        lengths = [prefix_mask.shape[1] + len(encoded[i].ids) - groups[k].shared for k, i in rows]
        scores_of = {}
        for batch in token_budget_batches(lengths, self.config.batch_tokens):
            members = [rows[b] for b in batch]
            group_rows = torch.tensor([k for k, _ in members], dtype=torch.long)
            ids, suffix_mask = right_padded(family.tokenizer, [encoded[i].ids[groups[k].shared :] for k, i in members])
            mask = torch.cat([prefix_mask[group_rows], suffix_mask], dim=1)
            start = torch.tensor([groups[k].shared for k, _ in members], dtype=torch.long)
            positions = start[:, None] + torch.arange(ids.shape[1], dtype=torch.long)[None, :]
            batch_cache = copy.deepcopy(cache)  # the pass appends to it; the next batch needs the prefix alone
            batch_cache.batch_select_indices(group_rows.to(self.device))
            scores = self._forward(family, ids, mask, cache=batch_cache, position_ids=positions)
            for row, (_, i) in enumerate(members):
                scores_of[i] = scores[row]
        return scores_of

    def _forward(self, family: PRMFamily, ids: Any, mask: Any, cache: Any = None, position_ids: Any = None) -> Any:
        """One forward pass: per-token scores [batch, length] on the CPU. With `cache`, the pass runs on top of the
        tokens it holds (`mask` then covers them too) and appends its own keys and values to it."""
        import torch

        inputs: dict[Any, Any] = {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}
        if position_ids is not None:
            inputs["position_ids"] = position_ids.to(self.device)
        if cache is not None:
            inputs.update({self._cache_keyword(family): cache, "use_cache": True})
        with torch.inference_mode():
            scores = family.token_scores(self.model, inputs).float().cpu()
        self.forward_calls += 1
        return scores

    def _cache_keyword(self, family: PRMFamily) -> str | None:
        """The keyword the cache module's forward takes a KV cache by (`cache` in current transformers,
        `past_key_values` before the rename), or None: a forward without one scores every candidate whole."""
        import inspect

        parameters = inspect.signature(family.cache_module(self.model).forward).parameters
        return next((name for name in ("cache", "past_key_values") if name in parameters), None)

    def close(self) -> None:
        self.model = None


def right_padded(tokenizer: Any, sequences: list[list[int]]) -> tuple[Any, Any]:
    """[batch, longest] ids and attention mask, padding on the right (read-out positions stay where they are)."""
    import torch

    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id or 0
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        mask[row, : len(sequence)] = 1
    return ids, mask


def build(config: HFPRMEngineConfig, family: PRMFamily) -> HFPRMEngine:
    """The checkpoint of `family` (`prm.path`) loaded with transformers, completed as the family reads it."""
    import transformers

    from tts.backends.hf import from_pretrained, resolve_device, resolve_dtype

    checkpoint = family.config
    assert checkpoint.path, "load_prm_tokenizer refuses a config without prm.path"
    device = resolve_device(config.device)
    dtype = resolve_dtype(checkpoint.dtype, device)
    model = from_pretrained(
        getattr(transformers, family.hf_auto_class()),
        checkpoint.path,
        what=f"the {family.family_name} PRM",
        key="prm.path",
        dtype=dtype,
        trust_remote_code=checkpoint.trust_remote_code,
    )
    model = family.prepare_hf_model(model.to(device).eval())
    log.info(
        "%s PRM %s on %s (%s), batch_tokens=%d", family.family_name, checkpoint.path, device, dtype, config.batch_tokens
    )
    return HFPRMEngine(config, model, device)
