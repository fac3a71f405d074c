"""A retrieval benchmark built offline from text already on this machine, with known answers.

    bench = build_benchmark("small")     # 300 queries over ~85 KB; "full": 900 over ~1.7 MB
    bench.documents                      # rag/documents.py Documents (virtual paths, real text)
    bench.queries                        # Query(text, doc, start, end, source): the byte span
                                         # [start, end) of ``doc`` is the passage that answers it
    bench.questions                      # QAItem(question, answers, doc, source) for generation

Two halves of different kinds (results are reported for each and for both):

python       the installed Python's own standard library (``sysconfig``'s stdlib directory; the
             module list is fixed below, a missing module is skipped). Every public function or
             method with a docstring gives one query: the docstring's first paragraph (its summary)
             with the function's name and the name's parts removed (``get_close_matches`` drops
             "get_close_matches", "close", "matches"; parts under 4 letters stay), at least 4
             words of 3+ letters left ("Same as a < b." is dropped); summaries that occur twice
             are dropped (they name no single function). The indexed module has every function's
             docstring removed (``strip_docstrings``), as code search benchmarks do, so the query
             must be matched to the code (identifiers, comments, strings), not to its own words.
             The answer span: the function's signature (its decorators and ``def`` lines).
shakespeare  the plays in data/shakespeare/ (``make data``), split into one document per play at
             their "TITLE / by William Shakespeare" headers. A query is one verse line of >= 7
             words that occurs once in the corpus (speaker names and stage directions excluded),
             lowercased, punctuation dropped and a seeded third of its words removed (three words
             of 4+ letters must stay); its span is the line. A known-item search: the words left
             are the line's own, so this half favours exact matching (BM25).

Relevant chunks (``relevant_rows``): those that hold the whole span; when the span crosses a
chunk boundary so no chunk holds it whole, those that overlap it. Relevance is thus defined by
byte spans, not by any particular chunker.

Sizes: "small" (CI, well under a minute with embedding): 6 small stdlib modules and Macbeth's
first 1200 lines, 300 queries in all (the python ones, then shakespeare lines up to 300).
"full": 40 modules and four plays (data/shakespeare/test.txt and val.txt), up to 600 python
queries (a seeded sample) and 300 shakespeare ones. Everything is seeded (``seed``), so one
machine (one Python version, one data build) always builds the same benchmark.

QA (``questions``): answers that sit in the documents and that a 135M model is unlikely to know
by heart: default values of stdlib function parameters ("In Python's textwrap module, what is
the default value of the width parameter of fill?" -> "70"; numbers and strings, not None, True,
False, 0 or 1) and ten hand-written questions on Macbeth and Richard II whose one-word answers are
in the text. Each item is kept only if its answer occurs in its document (checked here).
"""

from __future__ import annotations

import ast
import random
import re
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

from myllm101.rag.documents import Document

SIZES = ("small", "full")
SMALL_MODULES = ("calendar", "bisect", "fnmatch", "glob", "shlex", "sched")
FULL_MODULES = SMALL_MODULES + (
    "stat", "posixpath", "textwrap", "quopri", "operator", "heapq", "base64", "statistics", "difflib", "ftplib", "smtplib",
    "imaplib", "configparser", "datetime", "email/message.py", "locale", "logging/__init__.py",
    "mailbox", "pathlib", "random", "shutil", "tempfile", "threading", "urllib/parse.py",
    "zipfile.py", "ipaddress", "poplib", "socket", "traceback", "timeit",
    "selectors", "gzip", "uuid",
)  # fmt: skip
SHAKESPEARE_DIR = Path(__file__).resolve().parents[2] / "data" / "shakespeare"
N_QUERIES = {"small": 300, "full": 900}
MAX_PYTHON = {"small": 300, "full": 600}
SMALL_PLAY_LINES = 1200

# (question, answer, play document): each answer checked against the play's text
SHAKESPEARE_QA = (
    ("In Macbeth, which wood must come to Dunsinane before Macbeth is vanquished?", "Birnam",
     "macbeth"),
    ("In Macbeth, what is the name of Banquo's son, who escapes the murderers?", "Fleance",
     "macbeth"),
    ("In Macbeth, who was from his mother's womb untimely ripped?", "Macduff", "macbeth"),
    ("In Macbeth, what is the name of the officer attending on Macbeth?", "Seyton", "macbeth"),
    ("In Macbeth, who is the Earl of Northumberland, general of the English forces?", "Siward",
     "macbeth"),
    ("In Macbeth, what does the First Witch call out to in the first scene: 'I come, ...!'",
     "Graymalkin", "macbeth"),
    ("In Macbeth, which son of Duncan flees to Ireland?", "Donalbain", "macbeth"),
    ("In Macbeth, Macbeth is Thane of Cawdor and Thane of which other place?", "Glamis",
     "macbeth"),
    ("In Richard II, what is the name of the Duke of Hereford, son of John of Gaunt?",
     "Bolingbroke", "richard_the_second"),
    ("In Richard II, John of Gaunt is the Duke of which place?", "Lancaster",
     "richard_the_second"),
)  # fmt: skip


@dataclass
class Query:
    text: str
    doc: str  # document path
    start: int  # byte span of the answering passage in the document's UTF-8 text
    end: int
    source: str  # "python" | "shakespeare"


@dataclass
class QAItem:
    question: str
    answers: list[str]  # any of them, normalised, inside the normalised answer counts
    doc: str
    source: str


@dataclass
class Benchmark:
    size: str
    documents: list[Document]
    queries: list[Query]
    questions: list[QAItem]
    info: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# python: the standard library


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _module_file(name: str) -> Path:
    return stdlib_dir() / (name if name.endswith(".py") else f"{name}.py")


def _doc_path(name: str) -> str:
    return "python/" + (name if name.endswith(".py") else f"{name}.py")


def strip_name(summary: str, name: str) -> str:
    """``summary`` without ``name`` and its "_"-parts of >= 4 letters (whole words, any case):
    ("Return the close matches of word.", "get_close_matches") -> "Return the of word." """
    words = {name} | {p for p in name.split("_") if len(p) >= 4}
    for w in sorted(words, key=len, reverse=True):
        summary = re.sub(rf"(?i)(?<![\w]){re.escape(w)}(?![\w])", " ", summary)
    return re.sub(r"\s+", " ", summary).strip()


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith(
            "_"
        ):
            yield node


def strip_docstrings(text: str) -> tuple[str, dict[int, int]]:
    """``text`` without the lines of every function's docstring -> (new text, {old line number:
    byte offset of that line, or of where it would be, in the new text}). A docstring on its
    ``def`` line stays (removing the line would remove the definition)."""
    lines = text.splitlines(keepends=True)
    drop = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and ast.get_docstring(node):
            d = node.body[0]
            if d.lineno > node.lineno:
                drop.update(range(d.lineno, d.end_lineno + 1))
    kept, offset, where = [], 0, {}
    for i, line in enumerate(lines, 1):
        where[i] = offset
        if i not in drop:
            kept.append(line)
            offset += len(line.encode("utf-8"))
    where[len(lines) + 1] = offset
    return "".join(kept), where


def python_queries(name: str, text: str) -> list[Query]:
    """One query per public documented function of the module ``name``, its span in the module
    with the docstrings stripped (``strip_docstrings``; see the module doc)."""
    _, where = strip_docstrings(text)
    out = []
    for node in _functions(ast.parse(text)):
        doc = ast.get_docstring(node)
        if not doc or node.body[0].lineno == node.lineno:
            continue
        summary = re.sub(r"\s+", " ", doc.strip().split("\n\n")[0]).strip()
        query = strip_name(summary, node.name)
        if len(re.findall(r"[^\W\d_]{3,}", query)) < 4:  # "Same as a < b." says too little
            continue
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        # the signature: decorators and def line(s), up to where the docstring was
        out.append(
            Query(query, _doc_path(name), where[first], where[node.body[0].lineno], "python")
        )
    return out


def default_questions(name: str, text: str) -> list[QAItem]:
    """Questions on the default values of a module's public functions' parameters."""
    out = []
    module = name.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
    for node in _functions(ast.parse(text)):
        args = node.args
        positional = args.posonlyargs + args.args
        pairs = list(zip(positional[len(positional) - len(args.defaults) :], args.defaults))
        pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
        for arg, default in pairs:
            if not isinstance(default, ast.Constant):
                continue
            v = default.value
            if isinstance(v, bool) or v is None:
                continue
            if isinstance(v, (int, float)) and v not in (0, 1, -1):
                answer = ast.get_source_segment(text, default)  # 0o777 as written, not 511
            elif isinstance(v, str) and len(v.strip()) >= 2 and v.isprintable():
                answer = v.strip()
            else:
                continue
            question = (
                f"In Python's {module} module, what is the default value of the {arg.arg} "
                f"parameter of {node.name}?"
            )
            out.append(QAItem(question, [answer], _doc_path(name), "python"))
    return out


# ----------------------------------------------------------------------------------------------
# shakespeare


def split_plays(text: str) -> list[tuple[str, str]]:
    """[(slug, play text)] at each "TITLE\\n\\nby William Shakespeare" header, in file order:
    "THE TRAGEDY OF KING RICHARD THE SECOND" -> "richard_the_second" (leading "THE TRAGEDY OF
    KING", "THE HISTORY OF KING" ... dropped)."""
    lines = text.split("\n")
    heads = [i - 2 for i in range(2, len(lines)) if lines[i].strip() == "by William Shakespeare"]
    out = []
    for j, h in enumerate(heads):
        end = heads[j + 1] if j + 1 < len(heads) else len(lines)
        title = lines[h].strip().lower()
        title = re.sub(r"^(the )?(tragedy|history|life|comedy) of (king )?", "", title)
        slug = re.sub(r"[^a-z0-9]+", "_", title).strip("_") or f"play_{j}"
        out.append((slug, "\n".join(lines[h:end]).strip("\n") + "\n"))
    return out


def _verse_lines(text: str) -> list[tuple[int, int, str]]:
    """(byte start, byte end, line) of lines that look like spoken verse: >= 7 words, not a
    speaker name (all caps) or a stage direction ([...])."""
    out, pos = [], 0
    for line in text.split("\n"):
        n = len(line.encode("utf-8"))
        s = line.strip()
        if (len(s.split()) >= 7 and not s.startswith("[") and s.upper() != s
                and not s.endswith(".]")):  # fmt: skip
            out.append((pos, pos + n, s))
        pos += n + 1
    return out


def shakespeare_query(line: str, rng: random.Random) -> str | None:
    """The line lowercased, punctuation dropped, a third of its words (seeded) removed; at least
    three words of 4+ letters must stay (up to 5 draws), else None."""
    words = re.findall(r"[\w']+", line.lower())
    for _ in range(5):
        drop = set(rng.sample(range(len(words)), len(words) // 3))
        kept = [w for i, w in enumerate(words) if i not in drop]
        if sum(len(w) >= 4 for w in kept) >= 3:
            return " ".join(kept)
    return None


def shakespeare_queries(docs: list[Document], n: int, seed: int) -> list[Query]:
    """``n`` line queries (seeded) from ``docs``, lines that occur once in all of them."""
    cands, counts = [], {}
    for d in docs:
        for start, end, line in _verse_lines(d.text):
            cands.append((d.path, start, end, line))
            counts[line] = counts.get(line, 0) + 1
    cands = [c for c in cands if counts[c[3]] == 1]
    rng = random.Random(f"shakespeare:{seed}")
    out = []
    for i in rng.sample(range(len(cands)), len(cands)):  # a seeded order of every candidate
        text = shakespeare_query(cands[i][3], rng)
        if text is not None:
            out.append((i, Query(text, cands[i][0], cands[i][1], cands[i][2], "shakespeare")))
        if len(out) == n:
            break
    return [q for _, q in sorted(out, key=lambda t: t[0])]


def shakespeare_documents(size: str, data_dir: Path = SHAKESPEARE_DIR) -> list[Document]:
    files = ["test.txt"] if size == "small" else ["test.txt", "val.txt"]
    docs = []
    for name in files:
        path = data_dir / name
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: the Shakespeare corpus is missing; build it with make data"
            )
        for slug, text in split_plays(path.read_text(encoding="utf-8")):
            if size == "small":
                if slug != "macbeth":
                    continue
                text = "\n".join(text.split("\n")[:SMALL_PLAY_LINES]) + "\n"
            docs.append(Document(f"shakespeare/{slug}.txt", text))
    return docs


# ----------------------------------------------------------------------------------------------
# the benchmark


def normalize(text: str) -> str:
    """Lowercase, punctuation to spaces (a "." between digits stays), single spaces:
    "The default is 0.6." -> "the default is 0.6" """
    text = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", text.lower())
    text = re.sub(r"[^\w.]+", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def answer_found(answers: list[str], generated: str) -> bool:
    """A normalised answer occurs as whole words inside the normalised generated text."""
    g = f" {normalize(generated)} "
    return any(f" {normalize(a)} " in g for a in answers if normalize(a))


def _qa_items(size: str, docs: list[Document], modules_text: dict[str, str]) -> list[QAItem]:
    by_path = {d.path: normalize(d.text) for d in docs}
    items = []
    for name, text in modules_text.items():
        items.extend(default_questions(name, text)[: 1 if size == "full" else 2])
    items = items[:20]
    for q, a, slug in SHAKESPEARE_QA:
        items.append(QAItem(q, [a], f"shakespeare/{slug}.txt", "shakespeare"))
    return [it for it in items if it.doc in by_path
            and f" {normalize(it.answers[0])} " in f" {by_path[it.doc]} "]  # fmt: skip


def build_benchmark(size: str = "small", seed: int = 0,
                    data_dir: Path = SHAKESPEARE_DIR) -> Benchmark:  # fmt: skip
    """The benchmark of ``size`` ("small" | "full"); see the module docstring."""
    if size not in SIZES:
        raise ValueError(f"size: expected one of {SIZES}, got {size!r}")
    modules_text = {}
    for name in SMALL_MODULES if size == "small" else FULL_MODULES:
        path = _module_file(name)
        if path.is_file():
            modules_text[name] = path.read_text(encoding="utf-8")
    docs = [Document(_doc_path(n), strip_docstrings(t)[0]) for n, t in modules_text.items()]
    py = [q for n, t in modules_text.items() for q in python_queries(n, t)]
    seen: dict[str, int] = {}
    for q in py:
        seen[q.text.lower()] = seen.get(q.text.lower(), 0) + 1
    py = [q for q in py if seen[q.text.lower()] == 1]
    if len(py) > MAX_PYTHON[size]:
        rng = random.Random(f"python:{seed}")
        py = [py[i] for i in sorted(rng.sample(range(len(py)), MAX_PYTHON[size]))]
    plays = shakespeare_documents(size, data_dir)
    n_lines = N_QUERIES[size] - len(py) if size == "small" else 300
    sh = shakespeare_queries(plays, n_lines, seed)
    docs += plays
    info = {
        "python_stdlib": str(stdlib_dir()),
        "python_modules": list(modules_text),
        "plays": [d.path for d in plays],
        "documents": len(docs),
        "bytes": sum(len(d.text.encode("utf-8")) for d in docs),
        "queries": {"python": len(py), "shakespeare": len(sh)},
        "seed": seed,
    }
    return Benchmark(size, docs, py + sh, _qa_items(size, docs, modules_text), info)


def relevant_rows(chunks: list, query: Query) -> set[int]:
    """Rows of the chunks that hold ``query``'s span whole; if none does, those overlapping it."""
    inside = {i for i, c in enumerate(chunks)
              if c.doc == query.doc and c.start <= query.start and query.end <= c.end}  # fmt: skip
    if inside:
        return inside
    return {i for i, c in enumerate(chunks)
            if c.doc == query.doc and c.start < query.end and query.start < c.end}  # fmt: skip
