"""Processes started by the stack: PID files, liveness, ports, stopping.

A PID file holds the PID and the process' start time (field 22 of /proc/PID/stat),
so a PID reused by an unrelated process is never taken for ours, nor signalled.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from emstack.config import StackError


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; fields after it follow the last ')'.
    fields = stat.rpartition(")")[2].split()
    if fields[0] == "Z":  # a zombie has exited already
        return None
    return fields[19]


def read_pid(pid_file: Path) -> int | None:
    """The PID recorded in pid_file if that process is still the one we started."""
    try:
        pid_text, started = pid_file.read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    return pid if _start_time(pid) == started else None


def spawn(cmd: Sequence[str], log_file: Path, pid_file: Path, env: dict[str, str]) -> int:
    """Start cmd detached (own session), output appended to log_file; record its PID."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        log.write(f"\n=== {time.strftime('%F %T')} {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    started = _start_time(proc.pid)
    if started is None:
        raise StackError(f"{cmd[0]} exited at once; see {log_file}")
    pid_file.write_text(f"{proc.pid} {started}\n")
    return proc.pid


def stop(pid_file: Path, timeout: float) -> bool:
    """SIGTERM the recorded process, SIGKILL it after timeout; True if one was running."""
    pid = read_pid(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    _signal(pid, signal.SIGTERM)
    if not wait_gone(pid_file, timeout):
        _signal(pid, signal.SIGKILL)
        wait_gone(pid_file, 10)
    pid_file.unlink(missing_ok=True)
    return True


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def wait_gone(pid_file: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while read_pid(pid_file) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if nothing listens on host:port (a bind would succeed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
