"""`make dev` stops cleanly whatever stops it: SIGTERM, SIGINT, SIGHUP or SIGKILL sent to its
process group (what a process manager, an editor's stop button, Ctrl-C, a closed terminal or
a manager's last resort sends) leaves no process behind and frees both ports.

Run by `make test` (python -m unittest discover -s infra/local). Each case starts the real
`make dev` (emulator + every function under `cargo lambda watch`) on spare ports, in a
process group of its own, waits for its ready banner, signals the group and gives it 20 s.
The functions are built first, outside the timed part.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import unittest
from pathlib import Path

import sam_template

ROOT = sam_template.ROOT
BANNER = "Knoq is running locally"
#: How long a stopped `make dev` may take to be gone entirely.
STOP_WITHIN_SECS = 20
#: How long `make dev` may take to answer on every route once the functions are built.
START_WITHIN_SECS = 300
#: The most lines `make dev` may print before its banner on a warm build.
LINES_BEFORE_BANNER = 30


def spare_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of a process, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "
    return int(fields[1]), fields[0], int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """pid -> start time of `root` and every process below it."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (info := stat(int(entry.name))):
            children.setdefault(info[0], []).append(int(entry.name))
            starts[int(entry.name)] = info[2]
    found, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in starts:
            found[pid] = starts[pid]
            todo += children.get(pid, [])
    return found


def alive(processes: dict[int, int]) -> list[int]:
    """Those of `processes` still running (a zombie is gone: it holds nothing)."""
    left = []
    for pid, started in processes.items():
        info = stat(pid)
        if info and info[2] == started and info[1] != "Z":
            left.append(pid)
    return left


class DevStopsOnSignalsTest(unittest.TestCase):
    maxDiff = None
    @classmethod
    def setUpClass(cls):
        subprocess.run(["cargo", "build", "--workspace", "--bins"], cwd=ROOT, check=True, timeout=1800)

    def stop_with(self, sig: signal.Signals, repeat_after: float | None = None,
                  look_at_the_screen: bool = False) -> None:
        emulator, api, provider = spare_port(), spare_port(), spare_port()
        env = {
            **os.environ,
            "KNOQ_EMULATOR_PORT": str(emulator),
            "KNOQ_API_PORT": str(api),
            "KNOQ_PROVIDER_PORT": str(provider),
            "KNOQ_ENV_FILE": f".local/dev-signal-test-{os.getpid()}.env",
        }
        for name in ("AWS_ENDPOINT_URL", "KNOQ_ALLOWED_ORIGIN", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"):
            env.pop(name, None)
        dev = subprocess.Popen(
            ["make", "--no-print-directory", "dev"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own session and process group, as a manager starts it
        )
        output: list[str] = []
        ready = threading.Event()

        def read() -> None:
            for line in dev.stdout:
                output.append(line)
                if BANNER in line:
                    ready.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        processes: dict[int, int] = {}
        try:
            deadline = time.monotonic() + START_WITHIN_SECS
            while not ready.wait(0.5) and dev.poll() is None and time.monotonic() < deadline:
                pass
            self.assertTrue(
                ready.is_set(),
                f"make dev printed no ready banner (within {START_WITHIN_SECS} s, or it ended):\n"
                + "".join(output),
            )
            processes = descendants(dev.pid)
            self.assertGreaterEqual(len(processes), 4, "make, run.sh, the emulator, cargo lambda")
            if look_at_the_screen:
                self.screen_is_quiet_and_shows_requests(output, api)
            shown_before_stop = len(output)
            os.killpg(dev.pid, sig)
            if repeat_after is not None:
                time.sleep(repeat_after)
                try:
                    os.killpg(dev.pid, sig)
                except ProcessLookupError:
                    pass  # already gone
            deadline = time.monotonic() + STOP_WITHIN_SECS
            while time.monotonic() < deadline:
                if not alive(processes) and all(port_free(p) for p in (emulator, api, provider)):
                    break
                time.sleep(0.25)
            left = {pid: Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ") for pid in alive(processes)}
            self.assertEqual(left, {}, f"still running {STOP_WITHIN_SECS} s after {sig.name}")
            self.assertTrue(port_free(emulator), f"emulator port {emulator} still taken")
            self.assertTrue(port_free(api), f"API port {api} still taken")
            self.assertTrue(port_free(provider), f"provider emulator port {provider} still taken")
            if look_at_the_screen:
                time.sleep(0.5)  # what the stop printed, read
                errors = [line for line in output[shown_before_stop:] if "Error" in line]
                self.assertEqual(errors, [], "the stop prints no error lines")
        finally:
            for pid in alive(processes) + ([dev.pid] if dev.poll() is None else []):
                try:
                    os.kill(pid, signal.SIGKILL)  # only what this test started
                except ProcessLookupError:
                    pass
            dev.wait(timeout=10)
            reader.join(timeout=5)
            dev.stdout.close()
            (ROOT / env["KNOQ_ENV_FILE"]).unlink(missing_ok=True)
            (ROOT / env["KNOQ_ENV_FILE"].replace(".env", ".log")).unlink(missing_ok=True)

    def screen_is_quiet_and_shows_requests(self, output: list[str], api: int) -> None:
        """A warm start prints at most LINES_BEFORE_BANNER lines before the banner, the
        banner stays last until a request arrives, and a request then shows as one line."""
        banner_at = next(i for i, line in enumerate(output) if BANNER in line)
        self.assertLessEqual(banner_at, LINES_BEFORE_BANNER, "".join(output[:banner_at]))
        time.sleep(2)
        after_banner = output[banner_at:]
        self.assertFalse(any(line.strip() and not line.startswith(" ") for line in after_banner[1:]),
                         "the banner is the last thing on screen: " + "".join(after_banner))
        subprocess.run(["curl", "-s", "-o", "/dev/null", "-X", "POST",
                        f"http://127.0.0.1:{api}/api/managed-agents/cancel"], check=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if any("POST /api/managed-agents/cancel" in line and " 401 " in line for line in output):
                return
            time.sleep(0.25)
        self.fail("the request shows as one line: " + "".join(output[banner_at:]))

    def test_sigterm_stops_everything(self):
        self.stop_with(signal.SIGTERM)

    def test_sigterm_sent_again_during_the_cleanup_stops_everything(self):
        # make forwards a SIGTERM to its child too, and managers insist: the cleanup that the
        # first one started must not be cut short by the next.
        self.stop_with(signal.SIGTERM, repeat_after=0)

    def test_sigkill_stops_everything(self):
        # No cleanup can run: the services must stop when the script that started them dies.
        self.stop_with(signal.SIGKILL)

    def test_sigint_stops_everything_after_a_quiet_screen_that_shows_requests(self):
        # Ctrl-C: also what a person sees until then.
        self.stop_with(signal.SIGINT, look_at_the_screen=True)

    def test_sighup_stops_everything(self):
        self.stop_with(signal.SIGHUP)


if __name__ == "__main__":
    unittest.main()
