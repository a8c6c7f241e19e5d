"""Caption tokenisation as the COCO caption toolkit does it, and the Java runtime it needs.

The toolkit (``pycocoevalcap``) lower-cases and splits every caption with Stanford's
PTBTokenizer (a Java program), then drops its list of punctuation tokens. Its wrapper writes
the captions to a temporary file inside the installed package, which fails where
site-packages is read-only (shared installs, container images); :func:`ptb_tokenize_java`
runs the same jar with the same options and post-processing on a file in the system's
temporary folder instead, and checks that the output lines up with the input.

Without Java, :func:`ptb_tokenize_python` follows the tokenizer's output on common captions
(lower case, clitics split off, punctuation dropped, brackets kept as ``-lrb-`` and so on,
which the toolkit's upper-case list does not remove); rare constructions (``5'6"``, ``!!``)
may come out differently, so scores may differ slightly from the Java tokenizer's.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from pycocoevalcap.tokenizer import ptbtokenizer
from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS

JAVA_INSTALL_HINT = (
    "install a Java runtime (Debian/Ubuntu: apt-get install default-jre-headless; "
    "conda: conda install -c conda-forge openjdk)"
)
PTB_JAR = Path(ptbtokenizer.__file__).parent / ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR
_PUNCTUATIONS = frozenset(PUNCTUATIONS)
# Java reads these as line ends too: left in a caption, they would split it over two lines
# and shift every later caption onto the wrong image (the toolkit replaces only "\n").
_LINE_BREAKS = re.compile("[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
# A last line that is not empty: the tokenizer drops trailing empty lines (empty captions).
_SENTINEL = "end"


def find_java() -> str | None:
    """Path of the ``java`` on ``PATH`` when it runs, else ``None``."""
    path = shutil.which("java")
    return path if path is not None and _java_runs(path) else None


@functools.lru_cache(maxsize=8)
def _java_runs(path: str) -> bool:
    # A shim or a broken install can be on PATH and still fail to start.
    try:
        return subprocess.run([path, "-version"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _keep(line: str) -> str:
    """The toolkit's post-processing: drop its punctuation tokens."""
    return " ".join(w for w in line.rstrip().split(" ") if w not in _PUNCTUATIONS)


def ptb_tokenize_java(captions: Sequence[str], java: str = "java") -> list[str]:
    """Tokenise captions with the toolkit's PTBTokenizer jar, one output per caption.

    Each caption is one line (``-preserveLines``), so tokenising references and predictions
    in one call gives what the toolkit's two calls give, with one Java start instead of two.
    """
    text = "\n".join([*(_LINE_BREAKS.sub(" ", c) for c in captions), _SENTINEL])
    with tempfile.TemporaryDirectory(prefix="mmexp-ptb-") as folder:
        path = Path(folder) / "captions.txt"
        path.write_bytes(text.encode())
        command = [java, "-cp", str(PTB_JAR), "edu.stanford.nlp.process.PTBTokenizer"]
        done = subprocess.run(
            [*command, "-preserveLines", "-lowerCase", str(path)], capture_output=True
        )
    if done.returncode != 0:
        raise RuntimeError(
            f"PTBTokenizer failed (exit {done.returncode}): {done.stderr.decode()[-2000:]}"
        )
    lines = done.stdout.decode().split("\n")
    if len(lines) <= len(captions) or lines[len(captions)].strip() != _SENTINEL:
        raise RuntimeError(
            f"PTBTokenizer returned {len(lines) - 1} lines for {len(captions)} captions"
        )
    return [_keep(line) for line in lines[: len(captions)]]


_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_BRACKET_NAMES = frozenset(_BRACKETS.values())
# Kept whole with their period, as the tokenizer's abbreviation list does.
_ABBREVIATIONS = frozenset(
    [
        "mr.",
        "mrs.",
        "ms.",
        "dr.",
        "st.",
        "jr.",
        "sr.",
        "vs.",
        "etc.",
        "inc.",
        "co.",
        "ltd.",
        "mt.",
        "ave.",
        "prof.",
        "corp.",
    ]
)
_SPLIT_WORDS = {"cannot": ["can", "not"], "gonna": ["gon", "na"], "wanna": ["wan", "na"]}
_CLITICS = ("n't", "'s", "'m", "'re", "'ve", "'ll", "'d")
_CLITIC = re.compile(rf"^(.+?)({'|'.join(_CLITICS)})$")
# Replaced by a space: quotes and dashes (tokens the toolkit drops), ASCII and Unicode.
_DROPPED = re.compile(r"[\"`“”‘’—–…]|\.\.\.|--|\.{2,}|[;!?]|(?<!\d),|,(?!\d)|:(?!\d)|(?<!\d):")
_SEPARATE = re.compile(r"([%$+])")


def _split_token(token: str) -> list[str]:
    """One whitespace-free token as the tokenizer splits it, punctuation left in."""
    if token in _SPLIT_WORDS:
        return _SPLIT_WORDS[token]
    if token in _CLITICS or token in _BRACKET_NAMES:  # e.g. "a dog 's toy"
        return [token]
    head = token.lstrip("'-")
    if head != token and head in _SPLIT_WORDS:
        return _SPLIT_WORDS[head]
    token = head
    if token in _ABBREVIATIONS or re.fullmatch(r"(?:[a-z]\.){2,}", token):
        return [token]
    token = token.rstrip(".'-")  # a full stop, a closing quote, a plural possessive (bikes')
    match = _CLITIC.match(token)
    return [match.group(1), match.group(2)] if match else [token]


def ptb_tokenize_python(captions: Sequence[str]) -> list[str]:
    """Tokenise captions without Java, following PTBTokenizer's output on common captions."""
    out = []
    for caption in captions:
        text = _LINE_BREAKS.sub(" ", caption).lower()
        for bracket, name in _BRACKETS.items():
            text = text.replace(bracket, f" {name} ")
        text = _SEPARATE.sub(r" \1 ", _DROPPED.sub(" ", text))
        words = [w for token in text.split() for w in _split_token(token)]
        out.append(" ".join(w for w in words if w and w not in _PUNCTUATIONS))
    return out
