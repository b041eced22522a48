"""A real upstream git repository for the git source tests: a bare repository (what the controller
fetches, by a file:// URL) and a working clone that commits and pushes to it, as a person would."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

GIT_TIMEOUT_S = 60.0


def git(*args: str, cwd: Path, env_home: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        HOME=str(env_home),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_TERMINAL_PROMPT="0",
        LC_ALL="C",
        GIT_AUTHOR_NAME="Ada Ops",
        GIT_AUTHOR_EMAIL="ada@example.org",
        GIT_COMMITTER_NAME="Ada Ops",
        GIT_COMMITTER_EMAIL="ada@example.org",
    )
    done = subprocess.run(
        ["git", "-c", "init.defaultBranch=main", "-c", "protocol.file.allow=always", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        timeout=GIT_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr.decode()}"
    return done.stdout.decode().strip()


class Upstream:
    def __init__(self, root: Path, name: str = "upstream") -> None:
        self.root = root
        self.bare = root / f"{name}.git"
        self.clone = root / f"{name}-work"
        self.url = self.bare.as_uri()

    def create(self) -> Upstream:
        self.bare.mkdir(parents=True)
        self.run("init", "--quiet", "--bare", str(self.bare), cwd=self.root)
        self.run("clone", "--quiet", self.url, str(self.clone), cwd=self.root)
        self.run("checkout", "--quiet", "-B", "main")
        return self

    def run(self, *args: str, cwd: Path | None = None) -> str:
        return git(*args, cwd=cwd or self.clone, env_home=self.root)

    def write(self, name: str, data: str | bytes) -> Path:
        path = self.clone / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            path.write_text(data)
        else:
            path.write_bytes(data)
        return path

    def symlink(self, name: str, target: str) -> None:
        path = self.clone / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)

    def commit(self, message: str, *, amend: bool = False) -> str:
        self.run("add", "-A")
        self.run("commit", "--quiet", "--allow-empty", "-m", message, *(["--amend"] if amend else []))
        return self.run("rev-parse", "HEAD")

    def push(self, *, force: bool = False) -> None:
        self.run("push", "--quiet", *(["--force"] if force else []), "origin", "HEAD:refs/heads/main")

    def commit_and_push(self, message: str, files: dict[str, str] | None = None) -> str:
        for name, text in (files or {}).items():
            self.write(name, text)
        sha = self.commit(message)
        self.push()
        return sha


def wait_until(predicate: Callable[[], object], timeout_s: float = 30.0, what: str = "condition") -> None:
    """Poll with a generous deadline (a loaded 2-core machine), never a fixed sleep."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
