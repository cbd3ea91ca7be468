"""The servers `run.py` measures, each as a subprocess on a free port: ours on the embedded
defaults or on Redis + PostgreSQL, ours behind nginx (`make cluster`), the Channels tutorial
consumer (bench/baselines/tutorial_peer) and raw_ws.py. Server logs go to bench/results/."""

import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))  # run as a script: bench.common from the repository root
from bench.common import free_port, postgres_database, stop, wait_for_port  # noqa: E402
from chatproject.keys import setdefault_local_keys  # noqa: E402

RESULTS = BENCH / "results"
PYTHON = sys.executable
DEFAULT_REDIS = "redis://127.0.0.1:6379/15"
DEFAULT_DATABASE = "postgres://postgres@127.0.0.1:5432/test"

# Limits a load test would hit at once; everything else stays as production has it.
OURS_ENV = {
    "CHAT_RATE_PER_10S": "10000000",
    # One owner creates (or rejoins) every room; storm's clients react far beyond a person's budget.
    "CHAT_WRITE_RATES": "room=100000/hour,join=100000/min,react=100000/min",
    "CHAT_LOGIN_RATE": "100000/min",
    "CHAT_REGISTER_RATE": "100000/min",
    "CHAT_MAX_CONNECTIONS_PER_USER": "100000",
    "JWT_ACCESS_MINUTES": "600",
    "LOG_LEVEL": "WARNING",
    "PYTHONWARNINGS": "ignore::RuntimeWarning",  # "REDIS_URL is not set", on purpose
    "MALLOC_ARENA_MAX": "2",  # as deploy/systemd/chat@.service runs it
}

# Accounts created straight in the server's database with tokens minted for them: logging in
# 1,000 accounts through PBKDF2 would take minutes and measure the password hasher.
MINT_TOKENS = """
import json, os
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from rest_framework_simplejwt.tokens import AccessToken
User = get_user_model()
names = ["benchowner"] + [f"bench{i}" for i in range(int(os.environ["BENCH_USERS"]))]
have = set(User.objects.filter(username__in=names).values_list("username", flat=True))
User.objects.bulk_create([User(username=n, password=make_password(None)) for n in names if n not in have])
print(json.dumps({u.username: str(AccessToken.for_user(u)) for u in User.objects.filter(username__in=names)}))
"""


@dataclass
class Server:
    name: str  # the table's label
    kind: str  # ours, cluster (ours behind nginx), tutorial, raw
    port: int
    process: subprocess.Popen
    tokens: str | None = None
    database: str | None = None  # ours: its DATABASE_URL, for the commit probe

    @property
    def protocol(self):
        return "tutorial" if self.kind in ("tutorial", "raw") else "ours"


@contextlib.contextmanager
def serve(command, *, env, cwd, log_path, name, kind, ports=1, **extra):
    """Run `command` ({port} replaced by a free port, or the first of `ports` free ones) until the end."""
    for attempt in range(3):  # another program may take the port between our check and the server's bind
        port = free_port(ports)
        with open(log_path, "ab") as out:
            process = subprocess.Popen(
                [part.replace("{port}", str(port)) for part in command],
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for_port(port, process, timeout=60)
            break
        except RuntimeError as exc:
            stop(process)
            if attempt == 2 or "already in use" not in log_path.read_text(errors="replace"):
                raise RuntimeError(f"{exc}; see {log_path}") from None
    try:
        yield Server(name, kind, port, process, **extra)
    finally:
        stop(process)


def server_command(server_kind, app):
    if server_kind == "uvicorn":
        return [
            PYTHON,
            "-m",
            "uvicorn",
            app,
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            "--loop",
            "uvloop",
            "--ws",
            "websockets",
            "--log-level",
            "warning",
        ]
    # As `make run` serves it.
    return [
        PYTHON,
        "-m",
        "daphne",
        "-b",
        "127.0.0.1",
        "-p",
        "{port}",
        "--ping-interval",
        "20",
        "--ping-timeout",
        "30",
        app,
    ]


def uvicorn_missing():
    missing = [name for name in ("uvicorn", "uvloop", "websockets") if importlib.util.find_spec(name) is None]
    return f"not available: {', '.join(missing)} not installed (pip install 'uvicorn[standard]')" if missing else None


def redis_reachable(url):
    import redis

    try:
        redis.Redis.from_url(url, socket_timeout=2).ping()
        return True
    except redis.RedisError:
        return False


def drop_redis_keys(url, prefix):
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)


def prepare_ours(stack, *, services, users):
    """The environment of our server on a fresh database, migrated, with `users` bench accounts;
    returns (env, tokens file, label). Everything it creates is removed when `stack` closes."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "REDIS_PREFIX")}
    env.update(OURS_ENV, DJANGO_SETTINGS_MODULE="chatproject.settings", PYTHONUNBUFFERED="1")
    setdefault_local_keys(env)  # the servers and the token minting below sign with the same keys
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="chat-bench-")))
    if services:
        redis_url = os.environ.get("REDIS_URL") or DEFAULT_REDIS
        prefix = f"bench{os.getpid()}"
        env["DATABASE_URL"] = stack.enter_context(postgres_database(os.environ.get("DATABASE_URL") or DEFAULT_DATABASE))
        env.update(REDIS_URL=redis_url, REDIS_PREFIX=prefix)
        stack.callback(drop_redis_keys, redis_url, prefix)
        label = "postgres+redis"
    else:
        env["DATABASE_URL"] = f"sqlite:///{tmp / 'bench.sqlite3'}"
        label = "sqlite+memory"
    subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    minted = subprocess.run(
        [PYTHON, "manage.py", "shell", "-c", MINT_TOKENS],
        cwd=ROOT,
        check=True,
        env={**env, "BENCH_USERS": str(users)},
        capture_output=True,
        text=True,
    )
    tokens = tmp / "tokens.json"
    tokens.write_text(minted.stdout.strip().splitlines()[-1])
    return env, str(tokens), label


@contextlib.contextmanager
def ours(args, stamp, *, services, users):
    with contextlib.ExitStack() as stack:
        env, tokens, label = prepare_ours(stack, services=services, users=users)
        yield stack.enter_context(
            serve(
                server_command(args.server, "chatproject.asgi:application"),
                env=env,
                cwd=ROOT,
                log_path=RESULTS / f"{stamp}-ours-{label}.log",
                name=f"ours ({args.server}, {label})",
                kind="ours",
                tokens=tokens,
                database=env["DATABASE_URL"],
            )
        )


@contextlib.contextmanager
def cluster(args, stamp, *, processes, users):
    """`make cluster`'s deploy/cluster.py: `processes` daphnes on Redis + PostgreSQL behind nginx.
    Its pid is a supervisor: wsbench counts the RSS of the daphnes and nginx below it."""
    with contextlib.ExitStack() as stack:
        env, tokens, label = prepare_ours(stack, services=True, users=users)
        command = [PYTHON, "deploy/cluster.py", "--processes", str(processes), "--port", "{port}"]
        yield stack.enter_context(
            serve(
                command,
                env=env,
                cwd=ROOT,
                ports=processes + 1,
                log_path=RESULTS / f"{stamp}-cluster{processes}.log",
                name=f"ours x{processes} (daphne, {label}) behind nginx",
                kind="cluster",
                tokens=tokens,
            )
        )


@contextlib.contextmanager
def tutorial(args, stamp, redis_url):
    prefix = f"benchpeer{os.getpid()}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tutorial.settings",
        "PEER_LAYER": "redis",
        "REDIS_URL": redis_url,
        "PEER_PREFIX": prefix,
        "PYTHONUNBUFFERED": "1",
    }
    try:
        with serve(
            server_command(args.server, "tutorial.asgi:application"),
            env=env,
            cwd=BENCH / "baselines" / "tutorial_peer",
            log_path=RESULTS / f"{stamp}-tutorial.log",
            name=f"tutorial ({args.server}, RedisChannelLayer)",
            kind="tutorial",
        ) as server:
            yield server
    finally:
        drop_redis_keys(redis_url, prefix)  # its group keys would otherwise stay for a day


@contextlib.contextmanager
def raw_ws(args, stamp):
    with serve(
        [PYTHON, str(BENCH / "baselines" / "raw_ws.py"), "{port}"],
        env=dict(os.environ),
        cwd=ROOT,
        log_path=RESULTS / f"{stamp}-raw_ws.log",
        name="raw_ws",
        kind="raw",
    ) as server:
        yield server


def cluster_unavailable(args):
    """Why cluster2 cannot run here, or None. It needs `make cluster` (N processes behind nginx)."""
    if not args.cluster:
        return "not run: pass --cluster"
    if not (ROOT / "deploy" / "cluster.py").exists():
        return "not available: no deploy/cluster.py (`make cluster`)"
    if shutil.which("nginx") is None and not os.access("/usr/sbin/nginx", os.X_OK):
        return "not available: nginx is not installed"
    redis_url = os.environ.get("REDIS_URL") or DEFAULT_REDIS
    if not redis_reachable(redis_url):
        return f"not available: no Redis at {redis_url}"
    return None
