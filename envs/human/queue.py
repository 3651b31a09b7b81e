"""The label queue: pairs waiting for people's answers, in one SQLite file.

A run (through :class:`~prefbench.envs.human.teacher.HumanTeacher`) *posts* queries, the
labelling server shows them and *records* answers, and the run *collects* them. The two
are separate processes and either may be killed at any time, so every change is one
SQLite transaction in WAL mode with ``synchronous=FULL``: an answer that the server
acknowledged survives a kill of either side, and a restarted side sees exactly what was
committed.

Rules the schema enforces:

- a query id is derived from the run and the pair's content, so a restarted run that
  posts the same pair again reuses its query (and any answer it already has);
- one answer per query per labeller (the primary key), at most ``redundancy`` answers a
  query; an answer to an unknown, closed or withdrawn query is refused;
- the pair is shown in a random order (``swapped``), and an answer is stored undone: its
  ``pref`` is P(the run's first clip is better), whatever side it was shown on;
- answers are collected once: ``collect`` marks them with the collecting run, and a
  second ``collect`` by another run gets nothing (the same run gets the same answers,
  so a run killed between collecting and saving loses nothing).

Layout of a queue folder: ``queue.sqlite`` (+ its WAL files), ``queue.json`` (the format
marker) and ``media/`` (the clips' files, named by query id).
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefbench.envs.files import write_json

FORMAT = 1
MARKER = "queue.json"

#: The four answers a person can give, as the page's buttons name them, and the
#: probability that the clip shown on the left is better (``None``: abstains).
CHOICES: dict[str, float | None] = {
    "left": 1.0,
    "right": 0.0,
    "equal": 0.5,
    "cant_tell": None,
}

_ID = re.compile(r"^q[0-9a-f]{20}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}$")
_MEDIA = re.compile(r"^q[0-9a-f]{20}-[ab]\.(webp|gif|png)$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queries (
    id TEXT PRIMARY KEY,
    run TEXT NOT NULL,
    kind TEXT NOT NULL,
    prompt TEXT NOT NULL,
    first TEXT NOT NULL,
    second TEXT NOT NULL,
    swapped INTEGER NOT NULL,
    oracle REAL,
    redundancy INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'open',
    posted REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS answers (
    query TEXT NOT NULL REFERENCES queries(id),
    labeller TEXT NOT NULL,
    choice TEXT NOT NULL,
    shown_swapped INTEGER NOT NULL,
    pref REAL,
    answered REAL NOT NULL,
    collected_by TEXT,
    PRIMARY KEY (query, labeller)
);
CREATE INDEX IF NOT EXISTS open_queries ON queries(status, posted);
"""


class QueueError(ValueError):
    """A bad request to the queue (the server answers it with a 4xx status)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Query:
    """One pair to show, as the run posts it.

    Attributes:
        kind: ``clips`` (``first``/``second`` are media file names under ``media/``) or
            ``text`` (they are the two continuations of ``prompt``).
        first: The run's first item of the pair.
        second: The run's second item.
        prompt: The shared prompt of a text pair (``""`` for clips).
        swapped: Shown with ``second`` on the left.
        oracle: The synthetic oracle's answer (P(first better)) where the task has a true
            reward; never shown, kept for agreement figures.
    """

    kind: str
    first: str
    second: str
    prompt: str = ""
    swapped: bool = False
    oracle: float | None = None


def query_id(run: str, content: bytes) -> str:
    """The id of a run's query on a pair with this content (stable across restarts)."""
    return "q" + hashlib.sha256(run.encode() + b"\0" + content).hexdigest()[:20]


def check_labeller(name: str) -> str:
    """A labeller's name, checked: 1-64 letters, digits, spaces or ``._@-``."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise QueueError("labeller must be 1-64 letters, digits, spaces or ._@- characters")
    return name


def media_name_ok(name: str) -> bool:
    """Whether ``name`` can be one of the queue's media files (no paths, known kinds)."""
    return bool(_MEDIA.match(name))


class LabelQueue:
    """A queue folder (see the module docstring).

    Args:
        folder: The queue folder; created when missing or empty.

    Raises:
        QueueError: If ``folder`` is a file, or a non-empty folder that is not a queue.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise QueueError(f"{self.folder} is not a folder")
        marker = self.folder / MARKER
        if self.folder.is_dir() and any(self.folder.iterdir()) and not marker.is_file():
            raise QueueError(f"{self.folder} is not a label queue (no {MARKER}); name another")
        self.media = self.folder / "media"
        self.media.mkdir(parents=True, exist_ok=True)
        if marker.is_file():
            try:
                fmt = json.loads(marker.read_text())["format"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise QueueError(f"{marker} is corrupt ({exc})") from exc
            if fmt != FORMAT:
                raise QueueError(f"{self.folder} is a label queue of format {fmt}, not {FORMAT}")
        with self._connect() as db:
            db.executescript(_SCHEMA)
        if not marker.is_file():
            write_json(marker, {"format": FORMAT})

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # One connection per operation: the server's threads and the run's process
        # never share one, and SQLite's own locking orders their writes.
        try:
            db = sqlite3.connect(self.folder / "queue.sqlite", timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            raise QueueError(f"cannot open {self.folder / 'queue.sqlite'} ({exc})") from exc
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            db.row_factory = sqlite3.Row
            yield db
        except sqlite3.DatabaseError as exc:
            raise QueueError(f"{self.folder / 'queue.sqlite'} is corrupt ({exc})") from exc
        finally:
            db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # ------------------------------------------------------------------ the run's side
    def post(self, run: str, queries: Sequence[tuple[str, Query]], redundancy: int = 1) -> None:
        """Add ``(id, query)`` pairs; an id already posted keeps its row and answers.

        A withdrawn query posted again is opened again (a restarted run asks anew).
        """
        if redundancy < 1:
            raise QueueError("redundancy must be >= 1")
        now = time.time()
        with self._write() as db:
            for qid, q in queries:
                if not _ID.match(qid) or q.kind not in ("clips", "text"):
                    raise QueueError(f"bad query {qid!r} of kind {q.kind!r}")
                db.execute(
                    "INSERT INTO queries (id, run, kind, prompt, first, second, swapped, "
                    "oracle, redundancy, posted) VALUES (?,?,?,?,?,?,?,?,?,?) "
                    "ON CONFLICT(id) DO UPDATE SET status='open' WHERE status='withdrawn'",
                    (
                        qid,
                        run,
                        q.kind,
                        q.prompt,
                        q.first,
                        q.second,
                        int(q.swapped),
                        q.oracle,
                        redundancy,
                        now,
                    ),
                )

    def answered(self, ids: Sequence[str]) -> int:
        """How many of ``ids`` have all the answers they wait for."""
        with self._connect() as db:
            rows = db.execute(
                f"SELECT COUNT(*) FROM queries WHERE status='done' AND id IN ({_marks(ids)})",
                list(ids),
            ).fetchone()
        return int(rows[0])

    def collect(self, run: str, ids: Sequence[str]) -> dict[str, list[float | None]]:
        """The answers (``pref`` each; ``None`` for "can't tell") to ``ids``, taken once.

        Every query in ``ids`` is closed: those without an answer are withdrawn (the page
        stops showing them). Answers another run already collected are not returned.
        """
        out: dict[str, list[float | None]] = {qid: [] for qid in ids}
        with self._write() as db:
            rows = db.execute(
                f"SELECT query, pref FROM answers WHERE query IN ({_marks(ids)}) "
                "AND (collected_by IS NULL OR collected_by = ?) ORDER BY answered",
                [*ids, run],
            ).fetchall()
            for row in rows:
                out[row["query"]].append(row["pref"])
            db.execute(
                f"UPDATE answers SET collected_by = ? WHERE query IN ({_marks(ids)}) "
                "AND collected_by IS NULL",
                [run, *ids],
            )
            # Close what is still open: unanswered ones are withdrawn from the page, and
            # partly answered ones (redundancy > 1) take no answers nobody would collect.
            db.execute(
                "UPDATE queries SET status = CASE WHEN id IN (SELECT query FROM answers) "
                f"THEN 'done' ELSE 'withdrawn' END WHERE status='open' AND id IN ({_marks(ids)})",
                list(ids),
            )
        return out

    # ---------------------------------------------------------------- the page's side
    def next_query(self, labeller: str) -> dict[str, Any] | None:
        """The oldest open query that ``labeller`` has not answered, as the page shows it."""
        check_labeller(labeller)
        with self._connect() as db:
            row = db.execute(
                "SELECT * FROM queries WHERE status='open' AND id NOT IN "
                "(SELECT query FROM answers WHERE labeller=?) ORDER BY posted, id LIMIT 1",
                (labeller,),
            ).fetchone()
        if row is None:
            return None
        left, right = (
            (row["second"], row["first"]) if row["swapped"] else (row["first"], row["second"])
        )
        return {
            "id": row["id"],
            "kind": row["kind"],
            "prompt": row["prompt"],
            "left": left,
            "right": right,
        }

    def answer(self, query: str, labeller: str, choice: str) -> None:
        """Record ``labeller``'s ``choice`` (a key of :data:`CHOICES`, about the shown sides).

        Raises:
            QueueError: Unknown query (404), a closed one or a second answer by the same
                labeller (409), a bad choice or name (400).
        """
        check_labeller(labeller)
        if choice not in CHOICES:
            raise QueueError(f"choice must be one of {', '.join(CHOICES)}")
        if not isinstance(query, str) or not _ID.match(query):
            raise QueueError("no such query", 404)
        with self._write() as db:
            row = db.execute("SELECT * FROM queries WHERE id=?", (query,)).fetchone()
            if row is None:
                raise QueueError("no such query", 404)
            if row["status"] != "open":
                raise QueueError(f"query {query} is {row['status']}; it takes no answers", 409)
            seen = db.execute(
                "SELECT 1 FROM answers WHERE query=? AND labeller=?", (query, labeller)
            ).fetchone()
            if seen is not None:
                raise QueueError(f"{labeller} already answered query {query}", 409)
            shown_left = CHOICES[choice]
            pref = (
                None if shown_left is None else (1.0 - shown_left if row["swapped"] else shown_left)
            )
            db.execute(
                "INSERT INTO answers (query, labeller, choice, shown_swapped, pref, answered) "
                "VALUES (?,?,?,?,?,?)",
                (query, labeller, choice, row["swapped"], pref, time.time()),
            )
            count = db.execute("SELECT COUNT(*) FROM answers WHERE query=?", (query,)).fetchone()
            if count[0] >= row["redundancy"]:
                db.execute("UPDATE queries SET status='done' WHERE id=?", (query,))

    def progress(self, labeller: str | None = None) -> dict[str, Any]:
        """Counts for the page: ``answered`` (by ``labeller``, or all), ``waiting``, labellers."""
        with self._connect() as db:
            waiting = db.execute("SELECT COUNT(*) FROM queries WHERE status='open'").fetchone()[0]
            if labeller is None:
                answered = db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
            else:
                answered = db.execute(
                    "SELECT COUNT(*) FROM answers WHERE labeller=?", (labeller,)
                ).fetchone()[0]
            names = [
                r[0] for r in db.execute("SELECT DISTINCT labeller FROM answers ORDER BY labeller")
            ]
        return {"answered": int(answered), "waiting": int(waiting), "labellers": names}

    def answers(self) -> list[dict[str, Any]]:
        """Every answer with its query's oracle answer (long format, for agreement)."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT a.query, a.labeller, a.choice, a.shown_swapped, a.pref, a.answered, "
                "a.collected_by, q.run, q.oracle FROM answers a JOIN queries q ON q.id = a.query "
                "ORDER BY a.answered"
            ).fetchall()
        return [dict(r) for r in rows]


def _marks(ids: Sequence[str]) -> str:
    return ",".join("?" * len(ids)) or "NULL"


def agreement(answers: Sequence[dict[str, Any]]) -> dict[str, float | int]:
    """How often labellers agree with each other and with the oracle.

    Args:
        answers: Rows of :meth:`LabelQueue.answers`.

    Returns:
        ``labeller_pairs`` (pairs of two labellers' decided answers to one query),
        ``labeller_agreement`` (the share of them that agree), ``oracle_answers`` (decided
        answers to queries with a strict oracle preference) and ``oracle_agreement``; a
        share is NaN where nothing was counted. "Can't tell" answers are left out;
        "equal" agrees only with "equal".
    """
    by_query: dict[str, list[float]] = {}
    oracle_hits = oracle_n = 0
    for row in answers:
        if row["pref"] is None:
            continue
        by_query.setdefault(row["query"], []).append(row["pref"])
        if row["oracle"] is not None and row["oracle"] != 0.5:
            oracle_n += 1
            oracle_hits += int(row["pref"] == row["oracle"])
    pair_hits = pair_n = 0
    for prefs in by_query.values():
        for i in range(len(prefs)):
            for j in range(i + 1, len(prefs)):
                pair_n += 1
                pair_hits += int(prefs[i] == prefs[j])
    nan = float("nan")
    return {
        "labeller_pairs": pair_n,
        "labeller_agreement": pair_hits / pair_n if pair_n else nan,
        "oracle_answers": oracle_n,
        "oracle_agreement": oracle_hits / oracle_n if oracle_n else nan,
    }
