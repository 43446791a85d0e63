"""One training run per experiment folder: an exclusive lock (flock) naming its holder. The kernel releases
it when the holding process dies, so a lock left by a killed run is taken over without asking."""
from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
from pathlib import Path

from gantk.errors import GantkError


class ExperimentLock:
    def __init__(self, folder: str | Path):
        self.path = Path(folder) / ".lock"
        self.fd: int | None = None

    def __enter__(self) -> "ExperimentLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            try:
                who = json.loads(self.path.read_text())
                holder = f"pid {who['pid']} on {who['host']}, started {who['started']}"
            except (OSError, ValueError, KeyError):
                holder = "another process"
            raise GantkError(f"{self.path.parent} is in use by another gantk train ({holder}); wait for it to "
                             "finish, or use another --name") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": datetime.datetime.now().isoformat(timespec="seconds")}).encode())
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock; the file stays (removing it would race a new holder)
            self.fd = None
