"""The platform's commands live in ``redfl`` without making its dependencies mandatory."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from typer.testing import CliRunner

from redfl.cli import app as cli_app
from redfl.platform.settings import Settings

BLOCKED = """
import importlib.abc, sys
PLATFORM = {"fastapi", "starlette", "sqlalchemy", "alembic", "uvicorn", "argon2", "jwt",
            "prometheus_client", "psycopg", "cachetools"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in PLATFORM:
            raise ImportError(f"No module named {name!r}", name=name.split(".")[0])
        return None
sys.meta_path.insert(0, Block())
sys.argv = ["redfl", *sys.argv[1:]]
from redfl.cli import main
main()
"""


def _without_platform(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKED, *args], capture_output=True, text=True, check=False
    )


def test_redfl_works_without_the_platform_extra(tmp_path: Path) -> None:
    listed = _without_platform("strategies")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("fedavg")
    refused = _without_platform("users", "list", "--data", str(tmp_path))
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "redfl: error: the platform needs its dependencies (alembic is missing): "
        "pip install 'redfl[platform]'"
    )


def test_settings_file_in_the_data_folder(tmp_path: Path) -> None:
    (tmp_path / "platform.toml").write_text(
        'allowed_packages = ["labcode"]\nmax_clients = 50\n', encoding="utf-8"
    )
    settings = Settings.load(tmp_path, ray_address="10.0.0.5:6379", max_rounds=None)
    assert settings.client_packages == ("redfl.examples", "labcode")
    assert (settings.max_clients, settings.max_rounds) == (50, 1000)
    assert settings.ray_address == "10.0.0.5:6379"
    assert settings.url == f"sqlite:///{tmp_path.resolve() / 'redfl.db'}"
    (tmp_path / "platform.toml").write_text("max_workers = 0\ncolour = 1\n", encoding="utf-8")
    result = CliRunner().invoke(cli_app, ["db", "upgrade", "--data", str(tmp_path)])
    assert result.exit_code == 2
    assert "max_workers: Input should be greater than or equal to 1 (got 0)" in result.output
    assert "colour: unknown key" in result.output
    (tmp_path / "platform.toml").write_text(
        'trusted_proxies = ["10.0.0.0/8", "proxy.local"]\noption_limits = { "a.b" = 1 }\n',
        encoding="utf-8",
    )
    refused = CliRunner().invoke(cli_app, ["db", "upgrade", "--data", str(tmp_path)])
    assert refused.exit_code == 2
    assert "trusted_proxies: 'proxy.local' does not appear to be an IPv4 or IPv6 network" in (
        refused.output
    )
    assert "option_limits: not an option name: 'a.b'" in refused.output
    (tmp_path / "platform.toml").unlink()
    bad = CliRunner().invoke(cli_app, ["serve", "--data", str(tmp_path), "--ray-address", "x y"])
    assert bad.exit_code == 2 and "ray_address" in bad.output and "ray://host:port" in bad.output


DASHBOARD_FILES = (
    "index.html",
    "app.js",
    "api.js",
    "chart.js",
    "compare.js",
    "docs.js",
    "edge.js",
    "run.js",
    "runs.js",
    "users.js",
    "style.css",
    "icon.svg",
)


def test_the_wheel_ships_migrations_and_example_configs(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parent.parent
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(repo / name, source / name)
    shutil.copytree(repo / "redfl", source / "redfl", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    built = subprocess.run(
        [*pip, "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("redfl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        "redfl/platform/migrations/env.py",
        "redfl/platform/migrations/script.py.mako",
        "redfl/platform/migrations/versions/0001_initial.py",
        "redfl/platform/migrations/versions/0002_tracker.py",
        "redfl/platform/examples/digits_fedavg.toml",
        "redfl/platform/examples/ring_dsgd.toml",
        *(f"redfl/platform/web/{n}" for n in DASHBOARD_FILES),
    }
    assert shipped <= names
