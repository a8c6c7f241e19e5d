"""Caption metrics of the COCO caption evaluation toolkit: BLEU, METEOR, ROUGE-L, CIDEr-D, SPICE.

:func:`caption_scores` computes them as the toolkit's ``COCOEvalCap.evaluate`` does
(``pycocoevalcap``; Chen et al., "Microsoft COCO Captions: Data Collection and Evaluation
Server", 2015): references and predictions are tokenised with PTBTokenizer, then each
scorer's ``compute_score`` runs on the tokenised captions. Scores are in the toolkit's scale:
BLEU-1..4 (Papineni et al., 2002; corpus level, closest reference length), METEOR 1.5
(Denkowski & Lavie, 2014), ROUGE-L (Lin, 2004; beta = 1.2) and SPICE (Anderson et al., 2016)
between 0 and 1, CIDEr-D (Vedantam et al., 2015) between 0 and 10. Papers print them x100
(BLEU-4 36.5, CIDEr 113.2). CIDEr's idf comes from the evaluated references themselves, so it
depends on the whole split and is 0 on a corpus of one image.

PTBTokenizer, METEOR and SPICE are Java programs. Without a Java runtime, METEOR and SPICE
raise :class:`JavaNotFoundError` (what to install, how to leave them out) unless
``on_missing_java="partial"``, which logs that message and returns the other scores with the
left-out names in :attr:`CaptionScores.missing`. BLEU, ROUGE-L and CIDEr are computed either
way; without Java the captions are tokenised in Python
(:func:`~mmexp.metrics.caption_tokenize.ptb_tokenize_python`, with a warning).

:class:`~mmexp.metrics.caption_accumulator.CaptionMetrics` collects generations over an
evaluation loop, DDP included.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.spice import spice as toolkit_spice

from mmexp.metrics.caption_tokenize import (
    JAVA_INSTALL_HINT,
    find_java,
    ptb_tokenize_java,
    ptb_tokenize_python,
)

log = logging.getLogger(__name__)

METRICS = ("bleu", "meteor", "rouge_l", "cider", "spice")
DEFAULT_METRICS = ("bleu", "meteor", "rouge_l", "cider")
JAVA_METRICS = frozenset({"meteor", "spice"})
Captions = dict[Hashable, list[str]]


class JavaNotFoundError(RuntimeError):
    """A metric that runs on Java was asked for and no Java runtime runs here."""


class CaptionIdError(ValueError):
    """Predictions and references are not for the same images."""


class CaptionScores(dict[str, float]):
    """Scores by name; ``missing`` names the metrics left out for want of Java."""

    missing: tuple[str, ...] = ()


def wanted_metrics(metrics: Iterable[str], spice: bool = False) -> list[str]:
    """The asked-for metric names in the order of :data:`METRICS`; unknown names raise."""
    names = set(metrics) | ({"spice"} if spice else set())
    unknown = names - set(METRICS)
    if unknown:
        raise ValueError(f"unknown caption metrics {sorted(unknown)}; known: {list(METRICS)}")
    return [name for name in METRICS if name in names]


def java_missing_message(metrics: Sequence[str]) -> str:
    """What to do when ``metrics`` need Java and none runs."""
    names = ", ".join(m.upper() for m in metrics)
    return (
        f"{names} need a Java runtime and no `java` runs on PATH: {JAVA_INSTALL_HINT}, or "
        "leave them out with metrics=['bleu', 'rouge_l', 'cider'] (on_missing_java='partial' "
        "reports the others and lists these as missing)"
    )


def _few(ids: Iterable[Hashable], limit: int = 5) -> str:
    ids = list(ids)
    return ", ".join(map(repr, ids[:limit])) + (
        f" and {len(ids) - limit} more" if len(ids) > limit else ""
    )


def _checked(
    predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]
) -> tuple[list[Hashable], list[str], list[list[str]]]:
    """Image ids in the references' order, their predictions and references, validated."""
    unpredicted = [i for i in references if i not in predictions]
    unreferenced = [i for i in predictions if i not in references]
    if unpredicted or unreferenced:
        parts = [f"no prediction for images {_few(unpredicted)}"] if unpredicted else []
        parts += [f"no references for images {_few(unreferenced)}"] if unreferenced else []
        raise CaptionIdError("; ".join(parts))
    if not references:
        raise ValueError("no captions to score")
    ids = list(references)
    refs = []
    for i in ids:
        if not isinstance(predictions[i], str):
            raise TypeError(f"the prediction for image {i!r} is not a string")
        captions = references[i]
        if isinstance(captions, str) or not all(isinstance(c, str) for c in captions):
            raise TypeError(f"the references of image {i!r} must be a list of strings")
        # The toolkit would score an empty reference as a real one, quietly lowering scores.
        if not captions or any(not c.strip() for c in captions):
            raise ValueError(f"image {i!r} has an empty reference caption or none")
        refs.append(list(captions))
    return ids, [predictions[i] for i in ids], refs


def tokenize(
    ids: Sequence[Hashable],
    predictions: Sequence[str],
    references: Sequence[list[str]],
    java: str | None,
) -> tuple[Captions, Captions]:
    """Tokenised ``(gts, res)`` as the toolkit's scorers take them, in one tokenizer call."""
    captions = [c for refs in references for c in refs] + list(predictions)
    tokens = ptb_tokenize_java(captions, java) if java else _python_tokenize(captions)
    gts: Captions = {}
    position = 0
    for i, refs in zip(ids, references, strict=True):
        gts[i] = tokens[position : position + len(refs)]
        position += len(refs)
        if not all(gts[i]):
            raise ValueError(f"image {i!r} has a reference with no words (only punctuation)")
    res = {i: [t] for i, t in zip(ids, tokens[position:], strict=True)}
    return gts, res


def _python_tokenize(captions: Sequence[str]) -> list[str]:
    log.warning(
        "no Java runtime: captions are tokenised in Python, which follows the toolkit's "
        "PTBTokenizer on common captions; scores may differ slightly from the Java "
        "tokenizer's (%s)",
        JAVA_INSTALL_HINT,
    )
    return ptb_tokenize_python(captions)


def _bleu(gts: Captions, res: Captions) -> dict[str, float]:
    scores, _ = Bleu(4).compute_score(gts, res, verbose=0)  # verbose prints the counts
    return {f"bleu{n}": float(s) for n, s in enumerate(scores, start=1)}


def _meteor(gts: Captions, res: Captions) -> dict[str, float]:
    # One METEOR process per call: it takes about 8 s to start (-Xmx2G, the paraphrase
    # table), and is stopped and reaped here rather than whenever it is garbage-collected.
    meteor = Meteor()
    process = meteor.meteor_p
    try:
        score, _ = meteor.compute_score(gts, res)
    except (OSError, ValueError) as error:  # the jar died: a broken pipe, an empty line
        process.kill()
        process.wait()
        raise RuntimeError(f"METEOR failed: {process.stderr.read().decode()[-2000:]}") from error
    finally:
        if meteor.lock.locked():  # left held by an error, it would hang Meteor.__del__
            meteor.lock.release()
        with contextlib.suppress(OSError):  # a dead jar's pipe
            process.stdin.close()
        process.kill()
        process.wait()
        process.stdout.close()
        process.stderr.close()
    return {"meteor": float(score)}


def _rouge(gts: Captions, res: Captions) -> dict[str, float]:
    return {"rouge_l": float(Rouge().compute_score(gts, res)[0])}


def _cider(gts: Captions, res: Captions) -> dict[str, float]:
    return {"cider": float(Cider().compute_score(gts, res)[0])}


def _spice(gts: Captions, res: Captions) -> dict[str, float]:
    folder = Path(toolkit_spice.__file__).parent
    if not (folder / "lib" / "stanford-corenlp-3.6.0-models.jar").exists():
        raise FileNotFoundError(
            f"SPICE needs Stanford CoreNLP 3.6.0 in {folder / 'lib'}, which pycocoevalcap "
            "downloads (about 400 MB) on first use: run `python -m "
            "pycocoevalcap.spice.get_stanford_models` once where the internet can be "
            "reached, or leave SPICE out (spice=False)"
        )
    if not os.access(folder, os.W_OK):
        raise PermissionError(
            f"SPICE writes its temporary files and parse cache into {folder}, which is "
            "read-only here: install pycocoevalcap where it is writable or leave SPICE out"
        )
    return {"spice": float(toolkit_spice.Spice().compute_score(gts, res)[0])}


_SCORERS: dict[str, Callable[[Captions, Captions], dict[str, float]]] = {
    "bleu": _bleu,
    "meteor": _meteor,
    "rouge_l": _rouge,
    "cider": _cider,
    "spice": _spice,
}


def caption_scores(
    predictions: Mapping[Hashable, str],
    references: Mapping[Hashable, Sequence[str]],
    metrics: Iterable[str] = DEFAULT_METRICS,
    spice: bool = False,
    on_missing_java: Literal["raise", "partial"] = "raise",
) -> CaptionScores:
    """Corpus-level caption scores, as the COCO caption toolkit computes them.

    Args:
        predictions: One generated caption per image id.
        references: The reference captions of each image id (the same ids).
        metrics: Any of ``bleu`` (gives ``bleu1`` .. ``bleu4``), ``meteor``, ``rouge_l``,
            ``cider``, ``spice``.
        spice: Add SPICE (slow: a parser over every caption, 8 GB of Java heap).
        on_missing_java: Without Java, ``"raise"`` :class:`JavaNotFoundError` when METEOR
            or SPICE is asked for; ``"partial"`` logs the error and leaves them out.

    Returns:
        Scores in the toolkit's scale (0-1; CIDEr 0-10), ``missing`` naming left-out metrics.

    Raises:
        CaptionIdError: An image has references and no prediction, or the other way round.
        ValueError: An image has no reference, or an empty one.
        JavaNotFoundError: METEOR or SPICE without Java, with ``on_missing_java="raise"``.
        FileNotFoundError: SPICE without the Stanford CoreNLP models it downloads.
    """
    if on_missing_java not in ("raise", "partial"):
        raise ValueError(f"on_missing_java must be 'raise' or 'partial', got {on_missing_java!r}")
    wanted = wanted_metrics(metrics, spice)
    ids, preds, refs = _checked(predictions, references)
    java = find_java()
    missing: list[str] = []
    if java is None and (needs := [m for m in wanted if m in JAVA_METRICS]):
        if on_missing_java == "raise":
            raise JavaNotFoundError(java_missing_message(needs))
        log.error(java_missing_message(needs))
        missing, wanted = needs, [m for m in wanted if m not in needs]
    gts, res = tokenize(ids, preds, refs, java)
    scores = CaptionScores()
    scores.missing = tuple(missing)
    for name in wanted:
        scores.update(_SCORERS[name](gts, res))
    return scores
