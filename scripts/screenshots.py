"""Take the README's dashboard screenshots into ``docs/screenshots/`` (PNG).

Runs the bundled digits demo for real (in-process ``local`` runtime, no Ray), stores its
rounds and events the way an executor does, serves the app in this process and photographs
the runs list, the run detail with its charts, and the users page in Debian's Chromium.
The events are written into the store by the tests' stand-in for the run's job
(``tests/stand_in_events.py``) and reach the page over the real run WebSocket.

Usage: ``.venv/bin/python scripts/screenshots.py [--out docs/screenshots]``
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from browser import chromium, log_in, serve_in_thread, wait_for  # noqa: E402
from platform_app import PASSWORD, add_user, make_app  # noqa: E402
from stand_in_events import append_status  # noqa: E402

import redfl  # noqa: E402
from redfl.platform.catalog import examples  # noqa: E402
from redfl.platform.store import Store, new_run_id  # noqa: E402


def queue(app, example: str, owner: str) -> tuple[str, Path]:
    """A queued run of a bundled example; its id and folder."""
    config = next(e for e in examples() if e.name == example).config
    run_id = new_run_id()
    folder = app.state.settings.runs_dir / run_id
    folder.mkdir(parents=True)
    name = "ring-dsgd" if example == "ring_dsgd" else "digits-fedavg"
    with app.state.sessions() as session:
        store = Store(session)
        store.create_run(
            run_id=run_id,
            name=name,
            owner_id=store.require_user(owner).id,
            project_id=None,
            config_text=config,
            config_format="toml",
            rounds=20,
            run_dir=str(folder),
        )
    return run_id, folder


def feed(app, run_id: str, folder: Path, upto: int | None = None) -> None:
    """Store the run folder's rounds and failures (the first ``upto`` rounds) as events."""
    lines = [json.loads(x) for x in (folder / "events.jsonl").read_text().splitlines()]
    with app.state.sessions() as session:
        store = Store(session)
        for event in lines:
            kind = event.pop("type")
            event.pop("seq"), event.pop("time")
            if kind == "round_finished":
                if upto is not None and event["record"]["round"] > upto:
                    break
                store.add_round_metric(run_id, event["record"]["round"], event["record"])
                store.append_event(run_id, kind, event)
            elif kind == "failure":
                failure = event["failure"]
                store.add_failure(
                    run_id,
                    failure["round"],
                    failure["node_id"],
                    failure["phase"],
                    failure["reason"],
                )
                store.append_event(run_id, kind, event)


def main() -> None:
    """Build the scene, then take the three screenshots."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    app = make_app(Path(tempfile.mkdtemp(prefix="redfl-shots-")))
    for name, role in (("ada", "admin"), ("rita", "researcher"), ("sam", "researcher")):
        add_user(app, name, role)
    add_user(app, "vic", "viewer")

    done, done_dir = queue(app, "digits_fedavg", "rita")
    config = next(e for e in examples() if e.name == "digits_fedavg").config
    redfl.run(tomllib.loads(config), out=done_dir, overrides={"runtime": "local"})
    append_status(app, done, "running")
    feed(app, done, done_dir)
    append_status(app, done, "succeeded")
    cancelled, cancelled_dir = queue(app, "digits_fedavg", "sam")
    (cancelled_dir / "events.jsonl").write_text((done_dir / "events.jsonl").read_text())
    append_status(app, cancelled, "running")
    feed(app, cancelled, cancelled_dir, upto=7)
    append_status(app, cancelled, "cancelled")
    running, running_dir = queue(app, "digits_fedavg", "rita")
    (running_dir / "events.jsonl").write_text((done_dir / "events.jsonl").read_text())
    append_status(app, running, "running")
    feed(app, running, running_dir, upto=12)
    queue(app, "ring_dsgd", "sam")

    with serve_in_thread(app) as base, chromium() as browser:
        page = browser.new_page(viewport={"width": 1100, "height": 640})
        log_in(page, base, "ada", PASSWORD)
        page.wait_for_selector("#runs-table tbody tr")
        page.screenshot(path=out / "runs.png", full_page=True)
        page.goto(f"{base}/#/runs/{done}")
        wait_for(
            lambda: page.get_attribute("#accuracy-chart", "data-last-round") == "20", 30, "charts"
        )
        page.wait_for_selector("#live-state:text('finished')")
        page.screenshot(path=out / "run.png", full_page=True)
        page.goto(f"{base}/#/users")
        page.wait_for_selector("#users-table tbody tr")
        page.screenshot(path=out / "users.png", full_page=True)
    for name in ("runs.png", "run.png", "users.png"):
        size = (out / name).stat().st_size
        print(f"{out / name}: {size / 1000:.0f} kB")
        if size >= 200_000:
            sys.exit(f"{name} is {size} bytes, over the 200 kB budget")


if __name__ == "__main__":
    main()
