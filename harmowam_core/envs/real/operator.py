"""The operator's terminal during a real-station episode: one reader of stdin for answers and for Enter.

The operator does two things on the terminal: presses Enter to end an episode, and answers the station's
questions (send the arms home? recover after a reflex? stage reached?). Two readers of one stdin race for its
lines: an answer typed to the reflex question could end the episode instead. Here one thread reads every
line. While a question is being asked (`asking()`, from before its prompt is printed until it is answered,
re-prompts included) a line answers it; any other line is the operator ending the episode (`end_requested`,
cleared by the station's `reset`, so lines typed between episodes end nothing). Lines left over when a question
ends (a paste, a key held down) are dropped: they neither answer the next question nor end the episode. The
question's end waits (at most `DRAIN_S`) until the reader has read every line the terminal already holds; this
relies on the terminal being in line mode (one line per read, as `input` has it), and on one thread asking at a
time (the station's): lines typed for a second thread's question while the first one's leftovers drain are
dropped too. On a stream with a file descriptor the reader marks a line in flight from the moment it sees one
waiting on the descriptor until it has handed it over, so the question's end never finds a line taken by neither
the terminal nor the question (a read that blocks, a line without its newline yet, only delays the end, by at
most `DRAIN_S`). A stream without a descriptor (a test double) has no such mark: the end then trusts that the
reader waits, which a reader held up just after a read defeats.

    terminal = stdin_terminal()                       # None unless stdin is a terminal
    with terminal.asking():
        Confirm.ask(question, stream=terminal)        # rich reads its answer through `readline`
    ask_yes_no(question, terminal)                    # the same, without rich

Ctrl-D during a question raises `EOFError` from `readline` (as `input` does); at any other moment it counts as
Enter. Once the stream itself ends (a pipe at its end, a terminal hung up) every `readline` raises EOFError.
The thread owns stdin for the rest of the process: nothing else in the process may read it meanwhile.
"""

from __future__ import annotations

import contextlib
import queue
import select
import sys
import threading
import time
from collections.abc import Iterator
from typing import TextIO

_EOF = None  # in the answer queue: Ctrl-D during a question, or the end of the stream
DRAIN_S = 1.0  # the longest a question's end waits for the reader to catch up with lines already typed


class OperatorTerminal:
    """The one thread that reads `stream` (a text stream, e.g. `sys.stdin`) line by line.

    `asking()`: a context manager around one question (its prompt, answer and re-prompts). `readline()` -> str:
    the next line typed for the question (with its newline), as a file's `readline`; raises EOFError on Ctrl-D
    or once the stream has ended. `end_requested`: a `threading.Event` set by a line (or Ctrl-D) typed while no
    question was being asked. `closed`: whether the stream has ended. `reading` and `lines_read`: whether a
    `readline` waits, and how many lines it has returned.
    """

    def __init__(self, stream: TextIO):
        self._stream = stream
        self._answers: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.Lock()
        self._asking = 0  # questions being asked (nested `asking()` count once each)
        self._reading = 0  # `readline` calls blocked waiting
        self._draining = False  # a question has ended: lines the reader reads now are its leftovers
        self._waiting = False  # the reader thread is (about to be) blocked waiting for a line
        self._in_flight = False  # with a descriptor: the reader has seen a line waiting and not yet handed it over
        self._fd = _descriptor(stream)  # None: no descriptor to watch
        self.lines_read = 0  # lines (and Ctrl-Ds) `readline` has returned
        self.closed = False
        self.end_requested = threading.Event()
        self._thread = threading.Thread(target=self._read, name="harmowam-operator", daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def asking(self) -> Iterator[OperatorTerminal]:
        """Mark a question as being asked for the duration of the block; lines left unread when the last
        question ends are dropped."""
        with self._lock:
            self._asking += 1
        try:
            yield self
        finally:
            with self._lock:
                self._asking -= 1
                last = not self._asking
                self._draining = self._draining or last
            if last:
                self._drop_leftovers()

    @property
    def reading(self) -> bool:
        """Whether a `readline` is blocked waiting for the operator's next line."""
        with self._lock:
            return self._reading > 0

    def readline(self) -> str:
        with self.asking():
            with self._lock:
                self._reading += 1
            try:
                line = self._answers.get()
            finally:
                with self._lock:
                    self._reading -= 1
                    self.lines_read += 1
        if line is _EOF:
            raise EOFError("the operator's terminal was closed" if self.closed else "Ctrl-D")
        return line

    def _caught_up(self) -> bool:
        """Whether the reader has handed over every line the terminal holds (called holding the lock): no line is
        in flight and the descriptor has nothing to read (a terminal in line mode hands over one line per read, so
        nothing waits in Python's buffer either). Without a descriptor (a test double) the reader's state
        decides."""
        if self.closed:
            return True
        if self._fd is None:
            return self._waiting
        return not self._in_flight and not _readable(self._fd, 0)

    def _drop_leftovers(self) -> None:
        deadline = time.monotonic() + DRAIN_S
        try:
            while True:
                with self._lock:
                    if self._caught_up() or time.monotonic() >= deadline:
                        self._end_drain()
                        return
                time.sleep(0.001)
        finally:  # a Ctrl-C in the wait must not leave every later line dropped
            with self._lock:
                if self._draining:
                    self._end_drain()

    def _end_drain(self) -> None:
        """(Holding the lock.) Drop the answers the ended question left and take lines as usual again (last, so a
        Ctrl-C in between leaves the drain to the `finally` that repeats it)."""
        while True:
            try:
                self._answers.get_nowait()
            except queue.Empty:
                break
        if self.closed:
            self._answers.put(_EOF)  # every later question sees the end too
        self._draining = False

    def _read(self) -> None:
        while True:
            with self._lock:
                self._waiting = True
            if self._fd is not None:  # a line waits on the descriptor: in flight until handed over (docstring)
                _readable(self._fd, None)
                with self._lock:
                    self._waiting, self._in_flight = False, True
            line, ended = self._readline()
            with self._lock:
                self._waiting = self._in_flight = False
                if self._take(line, ended):
                    return

    def _readline(self) -> tuple[str, bool]:
        """The stream's next line and whether the stream has ended."""
        try:
            line = self._stream.readline()
            return line, not line and not self._stream.isatty()  # on a terminal, "" is Ctrl-D: reading goes on
        except (OSError, ValueError):  # a hung-up terminal (EIO) or a stream closed underneath us
            return "", True

    def _take(self, line: str, ended: bool) -> bool:
        """(Holding the lock.) Hand a line read to the question, drop it, or count it as Enter; True once the
        stream has ended."""
        if ended:
            self.closed = True
            self._answers.put(_EOF)
            return True
        if self._draining:
            return False  # left over from the question that just ended
        if self._asking:
            self._answers.put(line or _EOF)
        else:
            self.end_requested.set()
        return False


def _descriptor(stream) -> int | None:
    """The stream's file descriptor, or None where it has none (a test double)."""
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def _readable(fd: int, timeout_ms: int | None) -> bool:
    """Whether `fd` has something to read (a line, Ctrl-D, or its end: a hang-up or a closed descriptor also
    count, for the read to report), waiting up to `timeout_ms` (None: until it has). `poll`, not `select`: any
    descriptor number."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(timeout_ms))


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


def stdin_taken() -> bool:
    """Whether `stdin_terminal` has started its reader (another reader of stdin would lose keystrokes to it)."""
    return _stdin is not None


def ask_yes_no(question: str, terminal: OperatorTerminal | None = None) -> bool:
    """Ask `question` on stdout until the answer is y/yes/n/no; reads through `terminal` when given, else
    `input`. Raises EOFError when the input ends."""
    with terminal.asking() if terminal is not None else contextlib.nullcontext():
        while True:
            if terminal is None:
                answer = input(f"{question} [y/n] ")
            else:
                print(f"{question} [y/n] ", end="", flush=True)
                answer = terminal.readline()
            if answer.strip().lower() in ("y", "yes", "n", "no"):
                return answer.strip().lower().startswith("y")
