"""The doctor's Textual app driven headless (`App.run_test()` and its pilot).

Real parts: supervisord (from PyPI, the dev extra) runs two real programs that append to
their log files; the app's supervisord check reads them over XML-RPC (unix socket), its
log pane follows the selected program's real log file, and its restart action really
restarts the program through supervisord after the confirmation. The Kafka tab reads the
shared broker's real topics (unique ones created by the fixture).
"""

from __future__ import annotations

import asyncio
import uuid
import xmlrpc.client

import msgspec
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from supervisor_sides import Prog, Supervisord, wait_for
from tradeops.contracts import Heartbeat, encode
from tradeops.doctor.checks.supervisord import proxy
from tradeops.doctor.result import Status
from tradeops.doctor.tui import ConfirmScreen, DoctorApp
from tradeops.kafka_admin import client_conf

replace = msgspec.structs.replace
LOOP = "'while true; do echo tick-{name} $$; sleep 0.2; done'"


@pytest.fixture
def supd(tmp_path):
    progs = [Prog(n, command=["bash", "-c", LOOP.format(name=n)]) for n in ("alpha", "beta")]
    s = Supervisord(tmp_path / "supd", progs).start()
    url = f"unix://{tmp_path / 'supd' / 'supervisord.sock'}"

    def running() -> bool:
        try:
            return all(i["statename"] == "RUNNING" for i in proxy(url, 2).supervisor.getAllProcessInfo())
        except (OSError, xmlrpc.client.Error):
            return False

    wait_for(running, 20, "supervisord programs RUNNING", interval=0.2)
    yield url
    s.stop()


def pid_of(url: str, name: str) -> int:
    return proxy(url, 2).supervisor.getProcessInfo(name)["pid"]


async def until(pilot, cond, timeout: float = 10.0, what: str = "condition") -> None:
    for _ in range(int(timeout / 0.05)):
        if cond():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def make_app(cfg, url):
    cfg = replace(cfg, doctor=replace(cfg.doctor, supervisord_url=url, exporters={}, prometheus_url="",
                                      pushgateway_url="", kafka_data_dir="", postgres_data_dir=""),
                  supervisor=replace(cfg.supervisor, programs=[]))
    return DoctorApp(cfg, only=["supervisord"], refresh_s=0)


def test_navigation_detail_log_and_restart(base_cfg, supd):
    async def scenario():
        app = make_app(base_cfg, supd)
        async with app.run_test(size=(180, 50)) as pilot:
            await until(pilot, lambda: app.runs >= 1, what="first check run")
            names = [r.name for r in app.results]
            assert names == ["supervisord:alpha", "supervisord:beta"]
            assert all(r.status == Status.OK for r in app.results)
            # the first row is selected: detail pane and its log file followed
            assert app.selected.name == "supervisord:alpha"
            detail = str(app.query_one("#detail").render())
            assert "supervisord:alpha" in detail and "x restarts: supervisorctl restart alpha" in detail
            await until(pilot, lambda: any(line.startswith("tick-alpha") for line in app.log_lines),
                        what="alpha's log lines in the log pane")
            # navigation: down selects beta; its own log replaces alpha's
            await pilot.press("down")
            await until(pilot, lambda: app.selected.name == "supervisord:beta", what="beta selected")
            await until(pilot, lambda: any(line.startswith("tick-beta") for line in app.log_lines),
                        what="beta's log lines")
            assert not any(line.startswith("tick-alpha") for line in app.log_lines)
            # restart with confirmation: "n" keeps the program, "y" restarts it
            before = pid_of(supd, "beta")
            await pilot.press("x")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirmation")
            assert "supervisorctl restart beta" in app.screen.question
            await pilot.press("n")
            await until(pilot, lambda: not isinstance(app.screen, ConfirmScreen), what="dialog closed")
            await pilot.pause(0.3)
            assert pid_of(supd, "beta") == before
            await pilot.press("x")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirmation")
            await pilot.press("y")
            await until(pilot, lambda: app.last_action.startswith("restart: "), timeout=20, what="restart")
            after = pid_of(supd, "beta")
            assert after != before and app.last_action == "restart: supervisord program beta restarted"
            # the followed log shows the new process's lines
            await until(pilot, lambda: f"tick-beta {after}" in app.log_lines, what="new pid in the log")

    asyncio.run(scenario())


def test_restart_of_a_row_without_target_says_so(base_cfg, tmp_path):
    async def scenario():
        cfg = replace(base_cfg, doctor=replace(base_cfg.doctor, exporters={}, prometheus_url="",
                                               pushgateway_url="", kafka_data_dir=str(tmp_path),
                                               postgres_data_dir=""))
        app = DoctorApp(cfg, only=["disk"], refresh_s=0)
        async with app.run_test(size=(160, 40)) as pilot:
            await until(pilot, lambda: app.runs >= 1, what="first run")
            assert [r.name for r in app.results] == ["disk:kafka"]
            await pilot.press("x")
            await pilot.pause(0.2)
            assert not isinstance(app.screen, ConfirmScreen)
            assert app.last_action == "nothing to restart for disk:kafka"

    asyncio.run(scenario())


def test_kafka_view_topics_groups_and_peek(kafka_cfg, tmp_path):
    cfg = kafka_cfg
    p = Producer(client_conf(cfg))
    hb = Heartbeat(ts="2026-12-03T10:00:00+05:30", process="oms-core", host="h", pid=7, status="ok")
    for _ in range(3):
        p.produce(cfg.topics.heartbeats, value=encode(hb), partition=0)
    p.produce(cfg.topics.heartbeats, value=b'{"not": "a heartbeat"}', partition=1)
    assert p.flush(10) == 0
    group = f"doctor-view-{uuid.uuid4().hex[:6]}"
    cons = Consumer(client_conf(cfg, **{"group.id": group, "enable.auto.commit": False}))
    cons.commit(offsets=[TopicPartition(cfg.topics.heartbeats, 0, 1)], asynchronous=False)
    cons.close()

    async def scenario():
        c = replace(cfg, doctor=replace(cfg.doctor, exporters={}, prometheus_url="", pushgateway_url="",
                                        kafka_data_dir=str(tmp_path), postgres_data_dir=""))
        app = DoctorApp(c, only=["disk"], refresh_s=0)
        async with app.run_test(size=(180, 50)) as pilot:
            await until(pilot, lambda: app.runs >= 1, what="first run")
            await pilot.press("k")
            topics = app.query_one("#topics")
            await until(pilot, lambda: topics.row_count > 0, what="topics listed")
            row = topics.get_row(cfg.topics.heartbeats)
            assert row[1:] == [3, 0, 4, "heartbeats"]  # partitions, low, high, contract
            groups = app.query_one("#groups")
            await until(pilot, lambda: group in [k.value for k in groups.rows], what="group listed")
            # members, lag (messages), lag seconds, status (window not yet full: OK), worst
            g = groups.get_row(group)
            assert g[1:4] == [0, 2, g[3]] and float(g[3]) > 0
            assert str(g[4]) == "OK" and g[5] == f"{cfg.topics.heartbeats}[0]"
            topics.move_cursor(row=topics.get_row_index(cfg.topics.heartbeats))
            await pilot.press("p")
            peek = app.query_one("#peek")
            await until(pilot, lambda: len(peek.lines) >= 5, what="peeked messages")
            text = "\n".join(str(line.text) for line in peek.lines)
            assert text.count('"process":"oms-core"') == 3
            assert "INVALID (" in text  # the message that breaks the contract, with the reason

    asyncio.run(scenario())
