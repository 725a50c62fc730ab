"""`tradeops doctor` without --check: a Textual app over the same checks.

Tab "Checks": a table of results with status colours (refreshed every
``refresh_s``), the selected result's finding, advice and details, and a log pane that
follows its unit's journal, its supervised program's log file or its local service's
log (:mod:`.logs`). ``x`` restarts the selected unit/program after a confirmation
(:mod:`.actions`; privileges it lacks are named). Tab "Kafka" (:mod:`.kafka_view`):
topics with partitions and watermarks, consumer groups with lag and status, and ``p``
peeks at the latest messages of the selected topic, decoded by the contract.
Keys: r refresh, x restart, k/c switch tabs, p peek, q quit.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Footer, Header, Label, RichLog, Static, TabbedContent, TabPane

from ..config import Config
from . import actions, logs
from .result import Result, Status
from .runner import Runner, all_checks, select

COLOURS = {Status.OK: "green", Status.WARN: "yellow", Status.CRIT: "bold red", Status.UNKNOWN: "magenta"}


class ConfirmScreen(ModalScreen[bool]):
    """Yes/No question; dismissed with True (y / Yes) or False (n / Esc / No)."""

    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n", "answer(False)", "No"),
                Binding("escape", "answer(False)", "No")]
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    #dialog { width: 70; height: auto; border: thick $warning; padding: 1 2; background: $surface; }
    #buttons { height: auto; margin-top: 1; }
    """

    def __init__(self, question: str):
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.question, id="question")
            with Horizontal(id="buttons"):
                yield Button("Yes (y)", variant="error", id="yes")
                yield Button("No (n)", variant="primary", id="no")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class DoctorApp(App):
    TITLE = "tradeops doctor"
    CSS = """
    #checks { width: 3fr; }
    #side { width: 2fr; }
    #detail { height: auto; max-height: 50%; border: round $accent; padding: 0 1; }
    #log { border: round $secondary; }
    #topics, #groups { height: 1fr; }
    #peek { height: 1fr; border: round $secondary; }
    """
    BINDINGS = [
        Binding("r", "refresh", "Refresh"),
        Binding("x", "restart", "Restart"),
        Binding("k", "show_tab('kafka')", "Kafka"),
        Binding("c", "show_tab('checks')", "Checks"),
        Binding("p", "peek", "Peek topic"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, cfg: Config, only: Sequence[str] = (), refresh_s: float = 10.0,
                 kafka_view: bool = True):
        super().__init__()
        self.cfg = cfg
        checks, self._keep = select(all_checks(), only)
        self.runner = Runner(cfg, checks)
        self.refresh_s = refresh_s
        self.results: list[Result] = []
        self.selected: Result | None = None
        self.tail: logs.FileTail | logs.JournalTail | None = None
        self.tail_label = ""
        self._tail_gen = 0
        self.log_lines: list[str] = []  # what the log pane shows (tests read it)
        self.last_action = ""
        self.runs = 0
        self._kafka_enabled = kafka_view
        self._kafka = None

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(initial="checks-tab"):
            with TabPane("Checks", id="checks-tab"), Horizontal():
                yield DataTable(id="checks", cursor_type="row", zebra_stripes=True)
                with Vertical(id="side"):
                    yield Static("running the checks...", id="detail")
                    yield RichLog(id="log", max_lines=2000, wrap=True)
            with TabPane("Kafka", id="kafka-tab"):
                yield DataTable(id="topics", cursor_type="row")
                yield DataTable(id="groups", cursor_type="row")
                yield RichLog(id="peek", max_lines=500, wrap=True)
        yield Footer()

    def on_mount(self) -> None:
        t = self.query_one("#checks", DataTable)
        t.add_columns("STATUS", "CHECK", "FINDING")
        t.focus()
        self.query_one("#topics", DataTable).add_columns("TOPIC", "PARTITIONS", "LOW", "HIGH", "CONTRACT")
        self.query_one("#groups", DataTable).add_columns("GROUP", "MEMBERS", "LAG", "LAG (s)", "STATUS",
                                                         "WORST")
        self.action_refresh()
        if self.refresh_s > 0:
            self.set_interval(self.refresh_s, self.action_refresh)

    # ----------------------------------------------------------------- checks
    def action_refresh(self) -> None:
        self._run_checks()
        if self._kafka_enabled and self.query_one(TabbedContent).active == "kafka-tab":
            self._refresh_kafka()

    @work(thread=True, exclusive=True, group="checks")
    def _run_checks(self) -> None:
        results = [r for r in self.runner.run() if self._keep(r)]
        self.call_from_thread(self._show_results, results)

    def _show_results(self, results: list[Result]) -> None:
        self.runs += 1
        self.results = results
        t = self.query_one("#checks", DataTable)
        keep = self.selected.name if self.selected else None
        t.clear()
        row = 0
        for i, r in enumerate(results):
            t.add_row(Text(r.status.name, style=COLOURS[r.status]), r.name, r.finding, key=r.name)
            if r.name == keep:
                row = i
        if results:
            t.move_cursor(row=row)
            self._select(results[row])
        worst = max((r.status for r in results), key=lambda s: (s != Status.OK, s), default=Status.OK)
        self.sub_title = f"{len(results)} checks, worst {worst.name}"

    @on(DataTable.RowHighlighted, "#checks")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = event.row_key.value if event.row_key is not None else None
        for r in self.results:
            if r.name == key:
                self._select(r)
                break

    def _select(self, r: Result) -> None:
        changed = self.selected is None or self.selected.name != r.name
        self.selected = r
        self.query_one("#detail", Static).update(self.detail_text(r))
        if changed:
            self._start_tail(r)

    def detail_text(self, r: Result) -> Text:
        out = Text()
        out.append(f"{r.status.name}  ", style=COLOURS[r.status])
        out.append(r.name + "\n", style="bold")
        out.append(r.finding + "\n")
        if r.advice and r.status != Status.OK:
            out.append("What to do: ", style="bold")
            out.append(r.advice + "\n")
        how = actions.describe(r.target)
        if how:
            out.append(f"x restarts: {how}\n", style="dim")
        if self.tail_label and self.selected is r:
            out.append(f"log: {self.tail_label}\n", style="dim")
        if self.last_action:
            out.append(self.last_action + "\n", style="italic")
        if r.details:
            out.append(json.dumps(r.details, default=str)[:600], style="dim")
        return out

    # -------------------------------------------------------------------- log
    def _start_tail(self, r: Result) -> None:
        if self.tail is not None:
            self.tail.stop()
        log = self.query_one("#log", RichLog)
        log.clear()
        self.log_lines = []
        self._tail_gen += 1
        gen = self._tail_gen
        self.tail = logs.source_for(self.cfg, r, lambda line: self._emit_threadsafe(gen, line))
        self.tail_label = self.tail.label if self.tail else ""
        if self.tail is None:
            log.write(f"(no log source for {r.name})")
            return
        log.write(f"--- {self.tail_label}")
        self.tail.start()
        self.query_one("#detail", Static).update(self.detail_text(r))

    def _emit_threadsafe(self, gen: int, line: str) -> None:
        with contextlib.suppress(RuntimeError):  # the app is shutting down
            self.call_from_thread(self._emit, gen, line)

    def _emit(self, gen: int, line: str) -> None:
        if gen == self._tail_gen:  # lines from a source that was switched away are dropped
            self.log_lines.append(line)
            self.query_one("#log", RichLog).write(line)

    # ---------------------------------------------------------------- restart
    def action_restart(self) -> None:
        r = self.selected
        how = actions.describe(r.target if r else None)
        if r is None or not how:
            self.last_action = f"nothing to restart for {r.name if r else 'this row'}"
            self.notify(self.last_action, severity="warning")
            if r:
                self.query_one("#detail", Static).update(self.detail_text(r))
            return
        target = r.target

        def answered(yes: bool | None) -> None:
            if yes:
                self._do_restart(target)
            else:
                self.notify("restart cancelled")

        self.push_screen(ConfirmScreen(f"Restart {target.name}?\n\nThis runs: {how}"), answered)

    @work(thread=True, group="restart")
    def _do_restart(self, target) -> None:
        ok, msg = actions.restart(self.cfg, target)
        self.call_from_thread(self._restarted, ok, msg)

    def _restarted(self, ok: bool, msg: str) -> None:
        self.last_action = ("restart: " if ok else "restart FAILED: ") + msg
        self.notify(msg, severity="information" if ok else "error", timeout=8)
        if self.selected:
            self.query_one("#detail", Static).update(self.detail_text(self.selected))
        self.action_refresh()

    # ------------------------------------------------------------------ kafka
    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = f"{tab}-tab"
        self.query_one("#checks" if tab == "checks" else "#topics", DataTable).focus()
        if tab == "kafka" and self._kafka_enabled:
            self._refresh_kafka()

    @work(thread=True, exclusive=True, group="kafka")
    def _refresh_kafka(self) -> None:
        from .kafka_view import KafkaView

        try:
            if self._kafka is None:
                self._kafka = KafkaView(self.cfg, timeout=min(3.0, self.cfg.doctor.check_timeout_s))
            topics = self._kafka.topics()
            groups = self._kafka.groups()
            err = ""
        except Exception as e:  # noqa: BLE001 - shown in the view, never a traceback
            topics, groups, err = [], [], f"Kafka not readable: {type(e).__name__}: {e}"
        self.call_from_thread(self._show_kafka, topics, groups, err)

    def _show_kafka(self, topics, groups, err: str) -> None:
        tt = self.query_one("#topics", DataTable)
        gt = self.query_one("#groups", DataTable)
        tt.clear()
        gt.clear()
        for t in topics:
            tt.add_row(t.topic, t.partitions, t.low, t.high, t.contract or "-", key=t.topic)
        style = {"OK": "green", "WARN": "yellow", "STALL": "bold red", "STOP": "bold red",
                 "REWIND": "bold red"}
        for g in groups:
            secs = "-" if g.lag_seconds is None else f"{g.lag_seconds:.1f}"
            gt.add_row(g.group, g.members, g.lag, secs, Text(g.status, style=style.get(g.status, "")),
                       g.worst, key=g.group)
        if err:
            self.query_one("#peek", RichLog).write(err)

    def action_peek(self) -> None:
        tt = self.query_one("#topics", DataTable)
        if self.query_one(TabbedContent).active != "kafka-tab" or tt.row_count == 0:
            self.notify("peek: open the Kafka tab (k) and select a topic", severity="warning")
            return
        topic = tt.coordinate_to_cell_key(tt.cursor_coordinate).row_key.value
        self._peek(topic)

    @work(thread=True, group="peek")
    def _peek(self, topic: str) -> None:
        try:
            lines = self._kafka.peek(topic) if self._kafka else ["(Kafka view not ready)"]
        except Exception as e:  # noqa: BLE001
            lines = [f"peek {topic}: {type(e).__name__}: {e}"]
        self.call_from_thread(self._show_peek, topic, lines)

    def _show_peek(self, topic: str, lines: list[str]) -> None:
        log = self.query_one("#peek", RichLog)
        log.write(Text(f"--- latest messages of {topic}", style="bold"))
        for line in lines:
            log.write(line)

    def on_unmount(self) -> None:
        if self.tail is not None:
            self.tail.stop()
        if self._kafka is not None:
            self._kafka.close()


def run_tui(cfg: Config, only: Sequence[str] = ()) -> None:
    DoctorApp(cfg, only).run()
