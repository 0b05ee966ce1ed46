"""Exclusive claims on run ids: the lease protocol grid processes and workers share.

Before training a cell, a process claims its run id with a file under
``<results>/.claims/`` (see :class:`Claims`), so two grid processes, or Ray or
local workers, sharing one results root never train the same run twice. A claim
names its owner (host, pid, process start time); a killed owner (SIGKILL
included) leaves a claim the next process takes over at once when the owner ran
on this host, or after ``WSBENCH_CLAIM_STALE_S`` seconds without a heartbeat when
it ran on another host. An empty or unreadable claim file (damage) is taken over
after :data:`UNREADABLE_GRACE_S`.
"""
from __future__ import annotations

import json
import os
import platform
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

# How long an empty or unreadable claim file is respected (instead of WSBENCH_CLAIM_STALE_S): wsbench's own
# claims are whole the moment they appear, so only a writer of another kind can be mid-write for longer.
UNREADABLE_GRACE_S = 10.0


def utc_now() -> str:
    """The current UTC time to the second, ISO 8601: the timestamp of claims and stored rows."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def host_key() -> str:
    """This machine: host name plus boot id, so a rebooted host does not trust its old pids."""
    return f"{socket.gethostname()}:{boot_id()}"


def process_start(pid: int) -> str | None:
    """Start time of a process (clock ticks since boot) from /proc, to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 and fields[0] != "Z" else None


def pid_alive(pid: int, start: str | None) -> bool:
    if Path("/proc").is_dir():
        now = process_start(pid)  # None for a missing or zombie process
        return now is not None and (start is None or now == start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Claim:
    run_id: str
    path: Path
    token: str


class Claims:
    """Exclusive claims on run ids: one file ``<root>/.claims/<run_id>.json`` each.

    A claim is written whole to a private file and hard-linked into place (an
    atomic no-clobber create on local and NFS file systems); it holds the owner's
    host, pid, process start time and a random token. While held, a background
    thread touches it every ``heartbeat_s``.
    A claim is stale when its owner is on this host and no longer alive, or when
    it has not been touched for ``stale_after_s`` (owners on other hosts). A stale
    claim is taken over by renaming it aside (atomic: only one taker succeeds)
    and checking that the renamed file is the one judged stale.
    """

    def __init__(self, root: Path | str, stale_after_s: float | None = None, heartbeat_s: float | None = None):
        self.dir = Path(root) / ".claims"
        self.stale_after_s = float(stale_after_s if stale_after_s is not None
                                   else os.environ.get("WSBENCH_CLAIM_STALE_S", 600))
        self.heartbeat_s = float(heartbeat_s if heartbeat_s is not None else min(30.0, self.stale_after_s / 4))
        self._held: dict[str, Claim] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def path(self, run_id: str) -> Path:
        return self.dir / f"{run_id}.json"

    def owner(self, run_id: str) -> dict | None:
        """The claim's contents plus its age in seconds, or None when unclaimed."""
        p = self.path(run_id)
        try:
            info = json.loads(p.read_text())
            info["age_s"] = time.time() - p.stat().st_mtime
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            # Unreadable (written by another tool or damaged): judge by age alone.
            try:
                return {"token": None, "unreadable": True, "age_s": time.time() - p.stat().st_mtime}
            except FileNotFoundError:
                return None
        return info

    def is_stale(self, info: dict) -> bool:
        if info.get("host") == host_key() and info.get("pid") is not None:
            if not pid_alive(int(info["pid"]), info.get("start")):
                return True
        if info.get("unreadable"):
            # Claims are written whole and linked into place, so no live owner ever shows an empty or
            # garbled one for more than a moment: it is damage (or another tool's), not a training process.
            return info["age_s"] > min(UNREADABLE_GRACE_S, self.stale_after_s)
        return info["age_s"] > self.stale_after_s

    def holder(self, run_id: str) -> dict | None:
        """The live owner of a claim, or None when it is free or stale."""
        info = self.owner(run_id)
        return None if info is None or self.is_stale(info) else info

    def acquire(self, run_id: str) -> Claim | None:
        """Claim ``run_id``; None when a live owner holds it."""
        token = uuid.uuid4().hex
        record = {"run_id": run_id, "host": host_key(), "hostname": platform.node(), "pid": os.getpid(),
                  "start": process_start(os.getpid()), "token": token, "claimed_at": utc_now()}
        for _ in range(5):
            # The claim is written whole under a private name and hard-linked into place (no-clobber),
            # so no reader ever sees an empty claim: a process killed right after claiming leaves a
            # claim naming its dead pid, which the next grid takes over at once.
            tmp = self.dir / f".{run_id}.{token}.tmp"
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
                tmp.write_text(json.dumps(record))
                os.link(tmp, self.path(run_id))
            except FileNotFoundError:
                continue  # another process removed the empty claims folder meanwhile
            except FileExistsError:
                info = self.owner(run_id)
                if info is None:
                    continue  # released meanwhile: try again
                if not self.is_stale(info):
                    return None
                self._break(run_id, info)
                continue
            finally:
                tmp.unlink(missing_ok=True)
            claim = Claim(run_id, self.path(run_id), token)
            with self._lock:
                self._held[run_id] = claim
            self._ensure_heartbeat()
            return claim
        return None

    def _break(self, run_id: str, judged: dict) -> None:
        """Move a stale claim aside; put it back if someone else's fresh claim was moved instead."""
        aside = self.dir / f".{run_id}.stale.{uuid.uuid4().hex[:8]}"
        try:
            os.rename(self.path(run_id), aside)
        except FileNotFoundError:
            return
        try:
            moved = json.loads(aside.read_text()).get("token")
        except (OSError, ValueError):
            moved = None
        if moved != judged.get("token"):
            try:
                os.link(aside, self.path(run_id))  # no-clobber restore of the live claim
            except OSError:
                pass
        aside.unlink(missing_ok=True)

    def break_owned_by(self, run_id: str, hostname: str, pid: int) -> bool:
        """Remove the claim on ``run_id`` if process ``pid`` on ``hostname`` holds it: an owner known to
        be dead (a crashed Ray worker, which may have run on another host). True when it was removed."""
        info = self.owner(run_id)
        if info is None or info.get("pid") != pid or info.get("hostname") != hostname:
            return False
        self._break(run_id, info)
        return not self.path(run_id).exists()

    def still_mine(self, claim: Claim) -> bool:
        try:
            return json.loads(claim.path.read_text()).get("token") == claim.token
        except (OSError, ValueError):
            return False

    def release(self, claim: Claim) -> None:
        with self._lock:
            self._held.pop(claim.run_id, None)
        if self.still_mine(claim):
            claim.path.unlink(missing_ok=True)
        try:
            self.dir.rmdir()  # leave no trace in the results root once nothing is claimed
        except OSError:
            pass

    def _ensure_heartbeat(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return

        def beat():
            while True:
                time.sleep(self.heartbeat_s)
                with self._lock:
                    held = list(self._held.values())
                for c in held:
                    try:
                        os.utime(c.path)
                    except OSError:
                        pass
        self._thread = threading.Thread(target=beat, name="wsbench-claims", daemon=True)
        self._thread.start()
