"""The label queue, the labelling server's API and ``--teacher human`` in a run."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from human_helpers import ScriptedLabeller, Served, oracle_choice, request, swinging_pair
from tiny import tiny_config

from prefbench.benchmarks.cli import main
from prefbench.benchmarks.label_server import MAX_BODY, LabelServer
from prefbench.benchmarks.train import train
from prefbench.envs.data import ClipPairs
from prefbench.envs.human.media import PairView, control_renderer
from prefbench.envs.human.queue import LabelQueue, Query, QueueError, agreement, query_id
from prefbench.envs.human.teacher import HumanSettings, HumanTeacher
from prefbench.envs.tasks import get_task


def _post(queue: LabelQueue, run: str = "run", n: int = 2, swapped=(False, True), oracle=1.0):
    ids = [query_id(run, bytes([i])) for i in range(n)]
    queue.post(
        run, [(q, Query("text", "a", "b", "p", swapped[i % 2], oracle)) for i, q in enumerate(ids)]
    )
    return ids


def test_answers_are_stored_undone_once_per_labeller_and_collected_once(tmp_path):
    queue = LabelQueue(tmp_path / "q")
    plain, swapped = _post(queue)
    shown = queue.next_query("ann")
    assert shown["id"] == plain and (shown["left"], shown["right"]) == ("a", "b")
    queue.answer(plain, "ann", "left")
    assert queue.next_query("ann")["id"] == swapped
    assert (queue.next_query("ann")["left"], queue.next_query("ann")["right"]) == ("b", "a")
    queue.answer(swapped, "ann", "left")  # the left one shown is the run's second
    with pytest.raises(QueueError, match="already answered|takes no answers") as err:
        queue.answer(plain, "ann", "right")
    assert err.value.status == 409
    with pytest.raises(QueueError, match="no such query") as err:
        queue.answer("q" + "0" * 20, "ann", "left")
    assert err.value.status == 404
    with pytest.raises(QueueError, match="choice must be"):
        queue.answer(plain, "bob", "maybe")
    with pytest.raises(QueueError, match="labeller must be"):
        queue.answer(plain, "../x", "left")
    again = LabelQueue(tmp_path / "q")  # a restarted process sees every answer
    assert again.collect("run", [plain, swapped]) == {plain: [1.0], swapped: [0.0]}
    assert again.collect("run", [plain, swapped]) == {plain: [1.0], swapped: [0.0]}
    assert again.collect("other", [plain, swapped]) == {plain: [], swapped: []}
    rows = again.answers()
    assert [(r["labeller"], r["choice"], r["shown_swapped"]) for r in rows] == [
        ("ann", "left", 0),
        ("ann", "left", 1),
    ]


def test_unanswered_queries_are_withdrawn_and_a_repost_reopens_them(tmp_path):
    queue = LabelQueue(tmp_path / "q")
    (qid,) = _post(queue, n=1)
    assert queue.collect("run", [qid]) == {qid: []}
    assert queue.next_query("ann") is None
    with pytest.raises(QueueError, match="withdrawn"):
        queue.answer(qid, "ann", "left")
    _post(queue, n=1)
    assert queue.next_query("ann")["id"] == qid


def test_redundancy_and_agreement_by_hand(tmp_path):
    queue = LabelQueue(tmp_path / "q")
    ids = [query_id("run", bytes([i])) for i in range(2)]
    queue.post("run", [(q, Query("text", "a", "b", oracle=1.0)) for q in ids], redundancy=2)
    queue.answer(ids[0], "ann", "left")  # agrees with the oracle
    assert queue.next_query("bob")["id"] == ids[0]  # still open: one answer of two
    queue.answer(ids[0], "bob", "right")  # disagrees with ann and the oracle
    queue.answer(ids[1], "ann", "left")
    queue.answer(ids[1], "bob", "left")
    stats = agreement(queue.answers())
    assert stats["labeller_pairs"] == 2 and stats["labeller_agreement"] == 0.5
    assert stats["oracle_answers"] == 4 and stats["oracle_agreement"] == 0.75
    assert math.isnan(agreement([])["oracle_agreement"])


def test_a_folder_that_is_not_a_queue_is_refused(tmp_path, capsys):
    (tmp_path / "stuff.txt").write_text("mine")
    with pytest.raises(QueueError, match="is not a label queue"):
        LabelQueue(tmp_path)
    assert (tmp_path / "stuff.txt").read_text() == "mine"
    assert main(["label", "status", "--queue", str(tmp_path)]) == 2
    assert "is not a label queue" in capsys.readouterr().err


def test_the_api_answers_bad_requests_with_4xx(tmp_path):
    queue = LabelQueue(tmp_path / "q")
    (qid,) = _post(queue, n=1)
    (queue.media / f"{qid}-a.webp").write_bytes(b"RIFF")
    with Served(tmp_path / "q") as s:
        status, page = request(f"{s.base}/")
        assert status == 200 and b"Left is better" in page and b"Can't tell" in page
        status, got = request(f"{s.base}/api/next?labeller=ann")
        assert status == 200 and got["query"]["id"] == qid and got["progress"]["waiting"] == 1
        answer = {"query": qid, "labeller": "ann", "choice": "equal"}
        assert request(f"{s.base}/api/answer", answer)[0] == 200
        assert request(f"{s.base}/api/answer", answer)[0] == 409
        assert request(f"{s.base}/api/answer", {**answer, "query": "q" + "1" * 20})[0] == 404
        assert request(f"{s.base}/api/answer", {**answer, "query": "../etc"})[0] == 404
        assert request(f"{s.base}/api/answer", data=b"{not json")[0] == 400
        assert request(f"{s.base}/api/answer", {"query": qid})[0] == 400
        assert request(f"{s.base}/api/answer", {**answer, "choice": 3})[0] == 400
        assert request(f"{s.base}/api/answer", data=b"x" * (MAX_BODY + 1))[0] == 413
        assert request(f"{s.base}/api/next?labeller=")[0] == 400
        assert request(f"{s.base}/nothing")[0] == 404
        assert request(f"{s.base}/media/{qid}-a.webp")[0] == 200
        for bad in ("../queue.sqlite", "..%2Fqueue.sqlite", "queue.json", f"{qid}-c.webp"):
            assert request(f"{s.base}/media/{bad}")[0] == 404
        assert request(f"{s.base}/api/progress")[1]["labellers"] == ["ann"]


def test_a_non_local_bind_needs_a_token_on_every_request(tmp_path):
    with pytest.raises(ValueError, match="needs a token"):
        LabelServer(LabelQueue(tmp_path / "q"), "0.0.0.0", 0)
    with Served(tmp_path / "q", host="0.0.0.0", token="s3cret") as s:
        assert request(f"{s.base}/api/progress")[0] == 401
        assert request(f"{s.base}/api/progress?token=wrong")[0] == 401
        assert request(f"{s.base}/api/progress?token=s3cret")[0] == 200
        assert request(f"{s.base}/", headers={"X-Prefbench-Token": "s3cret"})[0] == 200


def test_a_port_in_use_is_one_line_and_exit_2(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "prefbench.benchmarks.cli",
                "label",
                "serve",
                "--queue",
                str(tmp_path / "q"),
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("prefbench: error: cannot listen on 127.0.0.1:")
    assert len(proc.stderr.strip().splitlines()) == 1


class _Views:
    def render(self, pairs):
        return [PairView("text", f"x{i}", f"y{i}", "p") for i in range(len(pairs))]


def test_human_teacher_unanswered_pairs_abstain(tmp_path):
    teacher = HumanTeacher(np.random.default_rng(0))
    teacher.bind("run", HumanSettings(tmp_path / "q", timeout_s=0.2, poll_s=0.05))
    teacher.use_renderer(_Views())
    rewards = np.array([[[1.0], [0.0]], [[0.0], [2.0]]], np.float32)
    pairs = ClipPairs(
        np.arange(4, dtype=np.float32).reshape(2, 2, 1, 1),
        np.zeros((2, 2, 1, 0), np.float32),
        rewards,
    )
    queue = LabelQueue(tmp_path / "q")
    labels = teacher.label(pairs)  # nobody answers
    assert not labels.valid.any() and teacher.abstained == 2
    # A person answers while the run waits; re-posting reopens the withdrawn queries.
    ids = [query_id("run", pairs.obs[i].tobytes() + pairs.acts[i].tobytes()) for i in range(2)]

    def answer_when_posted():
        for qid in ids:
            while queue.next_query("ann") is None:
                time.sleep(0.01)
            queue.answer(qid, "ann", oracle_choice(tmp_path / "q", qid))

    t = threading.Thread(target=answer_when_posted)
    t.start()
    teacher.settings = HumanSettings(tmp_path / "q", timeout_s=30, poll_s=0.05)
    labels = teacher.label(pairs)
    t.join()
    assert labels.valid.all() and labels.prefs.tolist() == [1.0, 0.0]


def test_a_pair_asked_twice_in_a_batch_is_one_query(tmp_path):
    teacher = HumanTeacher(np.random.default_rng(0))
    teacher.bind("run", HumanSettings(tmp_path / "q", timeout_s=30, poll_s=0.05))
    teacher.use_renderer(_Views())
    one = swinging_pair()
    pairs = ClipPairs(*(np.concatenate([a, a]) for a in (one.obs, one.acts, one.true_rewards)))
    queue = LabelQueue(tmp_path / "q")

    def answer_once():
        while (shown := queue.next_query("ann")) is None:
            time.sleep(0.01)
        queue.answer(shown["id"], "ann", oracle_choice(tmp_path / "q", shown["id"]))

    t = threading.Thread(target=answer_once)
    t.start()
    start = time.monotonic()
    labels = teacher.label(pairs)
    t.join()
    assert time.monotonic() - start < 10  # not the 30 s timeout
    assert labels.valid.all() and labels.prefs[0] == labels.prefs[1]
    assert queue.progress()["answered"] == 1


def test_pendulum_clips_are_animated_webp(tmp_path):
    views = control_renderer(get_task("pendulum")).render(swinging_pair())
    assert views[0].kind == "clips" and views[0].first[:4] == b"RIFF"
    assert views[0].first[8:12] == b"WEBP" and 1_000 < len(views[0].first) < 100_000
    assert views[0].first != views[0].second


def test_a_human_run_through_the_api_matches_the_oracle_run(tmp_path):
    queue_dir = tmp_path / "queue"
    LabelQueue(queue_dir)
    with Served(queue_dir) as s:
        labeller = ScriptedLabeller(s.base, queue_dir)
        labeller.start()
        human = train(
            tiny_config(
                tmp_path / "runs", teacher="human", label_queue=str(queue_dir), label_timeout=120
            )
        )
        labeller.stop.set()
    oracle = train(tiny_config(tmp_path / "runs", teacher="oracle"))
    assert labeller.answered == human["labels_used"] == 40
    # The scripted labeller answers as the oracle does, so the reward models are equal.
    assert human["final_rm_accuracy"] == oracle["final_rm_accuracy"]
    rows = [
        json.loads(x)
        for x in (tmp_path / "runs").glob("*human*/config.json")
        for x in [x.read_text()]
    ]
    assert rows[0]["run"]["label_queue"] == str(queue_dir)
