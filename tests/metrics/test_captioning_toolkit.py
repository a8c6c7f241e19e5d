"""Caption metrics against the COCO toolkit run directly; METEOR's process; equal under DDP."""

import os
from pathlib import Path

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.spice import spice as toolkit_spice
from pycocoevalcap.tokenizer import ptbtokenizer
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from mmexp.metrics.caption_tokenize import find_java, ptb_tokenize_java, ptb_tokenize_python
from mmexp.metrics.captioning import caption_scores
from tests.helpers import caption_metric_runs as workers
from tests.helpers.distributed import run_distributed

pytestmark = pytest.mark.skipif(find_java() is None, reason="no Java runtime")
toolkit_writable = pytest.mark.skipif(
    not os.access(Path(ptbtokenizer.__file__).parent, os.W_OK),
    reason="the toolkit's tokenizer writes into its read-only package folder",
)
SPICE_MODELS = Path(toolkit_spice.__file__).parent / "lib" / "stanford-corenlp-3.6.0-models.jar"

# Capitals, punctuation, clitics, brackets, quotes, hyphens, numbers: what PTBTokenizer changes.
REFERENCES = {
    **workers.REFERENCES,
    11: ["A man's dog (brown) isn't \"here\"; it's there!", "The dog's owner -- smiling."],
    12: ["Kids don't like it: they're bored...", "Two-year-old boys play soccer at 3:30 p.m."],
    13: ["A woman's hand holds a cell-phone [black] & a cup.", "U.S. flag, 1,000 stars, etc."],
}
PREDICTIONS = {
    **workers.PREDICTIONS,
    11: "A dog (brown) is not here, it's there.",
    12: "Boys don't play soccer!",
    13: "A woman holds a black cell-phone.",
}


# What the Java-free tokenizer is meant to match (it does not: ½, !!, 5'6", y'all, 10:30am).
COMMON = [
    "A man's dog (brown) isn't [here]; it's \"there\"!",
    "Two-year-old boys... play -- soccer, {ok} & more",
    "dots..end. etc. a.m. Mr. Smith at St. Mary's",
    "people's bikes' wheels",
    "\"Hello,\" she said. 'Bye.'",
    "a/b - c -d e- f--g 3.5 e-mail",
    "cannot gonna wanna o'clock 3:30 1,000 don't. dog's.",
    "x…y—z–w “quoted” ‘single’ x:y 50% $5 a+b",
    "can't won't I'm you're they've we'll he'd",
]


def test_the_python_tokenizer_follows_the_java_one_on_common_captions():
    captions = COMMON + list(PREDICTIONS.values()) + [c for r in REFERENCES.values() for c in r]
    assert ptb_tokenize_python(captions) == ptb_tokenize_java(captions, find_java())


def toolkit_run(predictions, references, scorers):
    """COCOEvalCap.evaluate's steps, called directly."""
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": c} for c in refs] for i, refs in references.items()})
    res = tokenizer.tokenize({i: [{"caption": predictions[i]}] for i in references})
    values = {}
    for scorer, names in scorers:
        score, _ = scorer.compute_score(gts, res)
        values.update(zip(names, score if isinstance(score, list) else [score], strict=True))
    return values


@toolkit_writable
def test_tokenization_equals_the_toolkits():
    captions = [c for refs in REFERENCES.values() for c in refs]
    expected = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(captions)})
    assert ptb_tokenize_java(captions, find_java()) == [expected[i][0] for i in expected]


@toolkit_writable
def test_bleu_rouge_and_cider_equal_the_toolkit_run_directly():
    scorers = [
        (Bleu(4), ["bleu1", "bleu2", "bleu3", "bleu4"]),
        (Rouge(), ["rouge_l"]),
        (Cider(), ["cider"]),
    ]
    expected = toolkit_run(PREDICTIONS, REFERENCES, scorers)
    assert caption_scores(PREDICTIONS, REFERENCES, metrics=workers.FAST) == expected


def child_processes() -> list[str]:
    """Commands of this process's children, zombies included (they stay until reaped)."""
    children = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        for pid in (task / "children").read_text().split():
            children.append((Path("/proc") / pid / "cmdline").read_bytes().decode())
    return children


@pytest.mark.slow  # METEOR starts in about 8 s
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="lists processes with /proc")
def test_meteor_of_a_copy_of_the_references_is_one_and_leaves_no_process():
    references = {1: ["a dog runs on the beach"], 2: ["two cats sleep on a red sofa"]}
    values = caption_scores(
        {1: "a dog runs on the beach", 2: "two cats sleep on a red sofa"}, references
    )
    assert values["meteor"] == pytest.approx(1.0, abs=1e-3)
    assert not [c for c in child_processes() if "java" in c]


@pytest.mark.slow
@toolkit_writable
def test_meteor_equals_the_toolkit_run_directly():
    meteor = Meteor()
    try:
        expected = toolkit_run(PREDICTIONS, REFERENCES, [(meteor, ["meteor"])])
    finally:
        meteor.__del__()
    values = caption_scores(PREDICTIONS, REFERENCES, metrics=["meteor"])
    assert values == expected and 0.1 < values["meteor"] < 0.9


@pytest.mark.skipif(SPICE_MODELS.exists(), reason="SPICE's models are installed")
def test_spice_without_its_models_says_how_to_get_them():
    with pytest.raises(FileNotFoundError, match="get_stanford_models"):
        caption_scores(PREDICTIONS, REFERENCES, metrics=[], spice=True)


@pytest.mark.slow
@pytest.mark.skipif(not SPICE_MODELS.exists(), reason="SPICE needs Stanford CoreNLP 3.6.0")
def test_spice_equals_the_toolkit_run_directly():
    expected = toolkit_run(PREDICTIONS, REFERENCES, [(toolkit_spice.Spice(), ["spice"])])
    assert caption_scores(PREDICTIONS, REFERENCES, metrics=[], spice=True) == expected


def test_two_processes_give_every_rank_the_one_process_scores(tmp_path):
    single = caption_scores(workers.PREDICTIONS, workers.REFERENCES, metrics=workers.FAST)
    results = run_distributed(workers.sharded_scores, 2, tmp_path)
    assert workers.shard(0, 2) + workers.shard(1, 2) == [0, 2, 4, 1, 3, 0]  # 0 padded in
    for result in results:
        assert result["scores"] == {f"val/{k}": v for k, v in single.items()}
        # An error found on rank 0 reaches both ranks rather than leaving rank 1 waiting.
        assert "image 0 came twice with different references" in result["error"]
