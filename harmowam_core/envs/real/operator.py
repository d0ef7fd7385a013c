"""The operator's terminal during a real-station episode: one reader of stdin, so answers never race Enter.

The operator does two things on the terminal: presses Enter to end an episode, and answers the station's
questions (send the arms home? recover after a reflex? stage reached?). Two readers of one stdin race for its
lines: an answer typed to the reflex question could end the episode instead. Here one thread reads every
line. A line typed while a question is pending (a prompt blocked in `readline`) answers that question; any
other line is the operator ending the episode (`end_requested`, cleared by the station's `reset`).

    terminal = stdin_terminal()                       # None unless stdin is a terminal
    Confirm.ask(question, stream=terminal)            # rich reads its answer through `readline`
    ask_yes_no(question, terminal)                    # the same, without rich

`readline` raises `EOFError` once the terminal is closed (Ctrl-D), as `input` does.
"""

from __future__ import annotations

import queue
import sys
import threading
from typing import TextIO


class OperatorTerminal:
    """The one thread that reads `stream` (a text stream, e.g. `sys.stdin`) line by line.

    `readline()` -> str: the next line typed while it waits (with its newline), as a file's `readline`;
    raises EOFError once the stream has ended. `question_pending`: whether a prompt waits in `readline`.
    `end_requested`: a `threading.Event` set by a line typed while no question was pending.
    """

    def __init__(self, stream: TextIO):
        self._stream = stream
        self._answers: queue.Queue[str] = queue.Queue()
        self._lock = threading.Lock()
        self._pending = 0  # prompts waiting in `readline`
        self.end_requested = threading.Event()
        self._thread = threading.Thread(target=self._read, name="harmowam-operator", daemon=True)
        self._thread.start()

    @property
    def question_pending(self) -> bool:
        """Whether a prompt is waiting in `readline` (the next line typed answers it)."""
        with self._lock:
            return self._pending > 0

    def readline(self) -> str:
        with self._lock:
            self._pending += 1
        try:
            line = self._answers.get()
        finally:
            with self._lock:
                self._pending -= 1
        if not line:
            self._answers.put(line)  # every later question sees the end too
            raise EOFError("the operator's terminal was closed")
        return line

    def _read(self) -> None:
        while True:
            try:
                line = self._stream.readline()
            except (OSError, ValueError):  # closed underneath us
                line = ""
            with self._lock:
                if not line:
                    self._answers.put("")
                    return
                if self._pending:
                    self._answers.put(line)
                else:
                    self.end_requested.set()


_stdin: OperatorTerminal | None = None
_stdin_lock = threading.Lock()


def stdin_terminal() -> OperatorTerminal | None:
    """The process's one reader of `sys.stdin`, started on first use; None when stdin is not a terminal (piped
    answers are then read directly, and there is no Enter to watch for)."""
    global _stdin
    with _stdin_lock:
        if _stdin is None and sys.stdin is not None and sys.stdin.isatty():
            _stdin = OperatorTerminal(sys.stdin)
        return _stdin


def ask_yes_no(question: str, terminal: OperatorTerminal | None = None) -> bool:
    """Ask `question` on stdout until the answer is y/yes/n/no; reads through `terminal` when given, else
    `input`. Raises EOFError when the input ends."""
    while True:
        if terminal is None:
            answer = input(f"{question} [y/n] ")
        else:
            print(f"{question} [y/n] ", end="", flush=True)
            answer = terminal.readline()
        if answer.strip().lower() in ("y", "yes", "n", "no"):
            return answer.strip().lower().startswith("y")
