#!/usr/bin/env python3
"""Several chat server processes behind nginx on one machine: `make cluster`, and load tests.

    .venv/bin/python deploy/cluster.py --processes 2 --port 8000

migrates the database, collects static files, starts daphne on PORT+1..PORT+N (the flags
of `make run`) and nginx on PORT with deploy/nginx/chat.conf (its upstream, `listen` and
static path rewritten for this machine), prints one line starting with `ready:` once every
one of them accepts connections, and runs until Ctrl-C or SIGTERM. Stopping stops the
servers first, so that their sockets close with 1001 through nginx, then nginx.

REDIS_URL (or REDIS_URLS, REDIS_SENTINEL_MASTERS: see docs/deployment.md) and DATABASE_URL
come from the environment, defaulting to the local services; a missing PostgreSQL database
is created. So do DJANGO_SECRET_KEY and JWT_SIGNING_KEY; without them each run signs with
random keys of its own (its sessions and tokens end with it). nginx runs as a child
process, not as the system service: its configuration, pid file, logs and temporary files
live in a run directory (a new temporary one unless --run-dir is given), so nothing needs root.
"""

import argparse
import grp
import os
import pwd
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))  # run as a script: chatproject.keys from the repository root
from chatproject.keys import setdefault_local_keys  # noqa: E402

SITE_CONFIG = BASE_DIR / "deploy" / "nginx" / "chat.conf"
STATIC_ROOT = BASE_DIR / "staticfiles"  # settings.STATIC_ROOT
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/chat"
DAPHNE_ARGS = ["--ping-interval", "20", "--ping-timeout", "30"]  # as `make run`


def nginx_binary() -> str | None:
    """nginx's path, or None; Debian installs it in /usr/sbin, which a user's PATH may lack."""
    return shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)


def _replace_once(pattern: str, replacement: str, text: str, flags: int = 0) -> str:
    result, count = re.subn(pattern, lambda _: replacement, text, flags=flags)
    if count != 1:
        raise ValueError(f"{SITE_CONFIG} no longer has exactly one match for {pattern!r}; update deploy/cluster.py")
    return result


def site_config(*, upstreams: list[str], listen: str, static_root: Path) -> str:
    """deploy/nginx/chat.conf with its upstream servers, `listen` and static directory replaced,
    and no access log (a load test would mostly measure it)."""
    text = SITE_CONFIG.read_text()
    servers = "".join(f"    server {address};\n" for address in upstreams)
    text = _replace_once(r"(?:^    server \S+;\n)+", servers, text, re.MULTILINE)
    text = _replace_once(r"^    listen 80;$", f"    listen {listen};", text, re.MULTILINE)
    text = _replace_once(r"access_log /var/log/nginx/chat.access.log chat;", "access_log off;", text)
    return _replace_once(r"alias /srv/chat/staticfiles/;", f"alias {static_root}/;", text)


def main_config(run_dir: Path, *, workers: int = 1) -> str:
    """A top-level nginx.conf keeping every path inside `run_dir`, including `run_dir/chat.conf`."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    files = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    mime_types = Path("/etc/nginx/mime.types")
    types = f"include {mime_types};" if mime_types.exists() else "types { text/css css; application/javascript js; }"
    temp = "\n".join(
        f"    {kind}_temp_path {run_dir / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # Started as root, nginx would run its workers as nobody, who may not read the static
    # files or the run directory: keep them on the user who started it, as without root.
    user = ""
    if os.geteuid() == 0:
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};"
    return f"""\
{user}
worker_processes {workers};
worker_rlimit_nofile {files};
pid {run_dir / "nginx.pid"};
error_log {run_dir / "error.log"} warn;

events {{
    worker_connections {max(1024, files // 2)};
}}

http {{
    {types}
    default_type application/octet-stream;
    access_log off;
{temp}
    include {run_dir / "chat.conf"};
}}
"""


class Nginx:
    """nginx in the foreground as a child process, configured in `run_dir`."""

    def __init__(self, run_dir: Path, site: str, *, workers: int = 1):
        self.run_dir = run_dir
        self.binary = nginx_binary()
        if self.binary is None:
            raise RuntimeError("nginx is not installed: apt-get install -y nginx")
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "chat.conf").write_text(site)
        self.config = run_dir / "nginx.conf"
        self.config.write_text(main_config(run_dir, workers=workers))
        self.process: subprocess.Popen | None = None

    def command(self, *extra: str) -> list[str]:
        return [
            self.binary,
            "-p",
            f"{self.run_dir}/",
            "-c",
            str(self.config),
            "-e",
            str(self.run_dir / "error.log"),
            *extra,
        ]

    def start(self) -> None:
        check = subprocess.run(self.command("-t", "-q"), capture_output=True, text=True)
        if check.returncode:
            raise RuntimeError(f"nginx rejects {self.config}:\n{check.stderr}")
        self.process = subprocess.Popen(self.command("-g", "daemon off;"), start_new_session=True)

    def errors(self) -> str:
        log = self.run_dir / "error.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process, signal.SIGQUIT)  # graceful: finish the requests in flight


def _stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for_port(host: str, port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with code {process.returncode} before listening on {port}")
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {host}:{port} after {timeout} s") from None
            time.sleep(0.1)


def ensure_database(url: str) -> None:
    """Create the PostgreSQL database named by `url` if it does not exist yet."""
    parts = urlsplit(url)
    if not parts.scheme.startswith("postgres"):
        return
    import psycopg
    from psycopg import sql

    name = parts.path.lstrip("/")
    with psycopg.connect(parts._replace(path="/postgres").geturl(), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            print(f"created database {name}", flush=True)


def manage(*args: str, env: dict) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, check=True)


class Stop(Exception):
    pass


def _raise_stop(signum, frame):
    raise Stop


def run(args) -> int:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "chatproject.settings",
        "PYTHONUNBUFFERED": "1",
        "DATABASE_URL": os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
        # nginx appends the client's address to X-Forwarded-For: one proxy.
        "DJANGO_NUM_PROXIES": os.environ.get("DJANGO_NUM_PROXIES", "1"),
        "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2"),
    }  # as deploy/systemd/chat@.service
    if not any(env.get(name) for name in ("REDIS_URL", "REDIS_URLS")):
        env["REDIS_URL"] = DEFAULT_REDIS_URL
    setdefault_local_keys(env)
    ensure_database(env["DATABASE_URL"])
    manage("migrate", "--noinput", "-v0", env=env)
    manage("collectstatic", "--noinput", "-v0", env=env)

    ports = [args.port + i for i in range(1, args.processes + 1)]
    run_dir = Path(args.run_dir).resolve() if args.run_dir else Path(tempfile.mkdtemp(prefix="chat-cluster-"))
    nginx = Nginx(
        run_dir,
        site_config(
            upstreams=[f"127.0.0.1:{p}" for p in ports], listen=f"{args.host}:{args.port}", static_root=STATIC_ROOT
        ),
        workers=args.nginx_workers,
    )
    servers: list[subprocess.Popen] = []
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    try:
        for port in ports:
            servers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "daphne",
                        "-b",
                        "127.0.0.1",
                        "-p",
                        str(port),
                        *DAPHNE_ARGS,
                        "chatproject.asgi:application",
                    ],
                    cwd=BASE_DIR,
                    env=env,
                    # Ctrl-C reaches this process only: it stops the servers before nginx, so that
                    # their 1001 close frames get through.
                    start_new_session=True,
                )
            )
        for port, server in zip(ports, servers):
            wait_for_port("127.0.0.1", port, server)
        nginx.start()
        wait_for_port(args.host, args.port, nginx.process)
        print(
            f"ready: http://{args.host}:{args.port}/ -> {len(ports)} daphne processes on ports "
            f"{', '.join(map(str, ports))}; nginx files in {run_dir}",
            flush=True,
        )
        while all(p.poll() is None for p in (*servers, nginx.process)):
            time.sleep(0.5)
        dead = next(p for p in (*servers, nginx.process) if p.poll() is not None)
        print(f"{' '.join(map(str, dead.args[:6]))} exited with code {dead.returncode}; stopping", file=sys.stderr)
        return 1
    except Stop:
        print("stopping", flush=True)
        return 0
    except RuntimeError as exc:  # a server or nginx did not start
        print(f"{exc}; stopping", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the shutdown short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for server in servers:
            if server.poll() is None:
                server.terminate()
        for server in servers:
            _stop(server)
        nginx.stop()
        if not args.run_dir:
            shutil.rmtree(run_dir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", "-n", type=int, default=2, help="daphne processes (default 2)")
    parser.add_argument(
        "--port", "-p", type=int, default=8000, help="nginx's port; the servers take the next ones (default 8000)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="nginx's address (default 127.0.0.1)")
    parser.add_argument("--nginx-workers", type=int, default=1, help="nginx worker processes (default 1)")
    parser.add_argument("--run-dir", help="keep nginx's configuration and logs here (default: a temporary directory)")
    args = parser.parse_args()
    if args.processes < 1:
        parser.error("--processes must be at least 1")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
