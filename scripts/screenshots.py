"""Take the README's dashboard screenshots into ``docs/screenshots/`` (PNG).

Runs the bundled digits demo for real (in-process ``local`` runtime, no Ray) four times
(two learning rates, two partitions), stores their rounds and events the way an executor
does, serves the app in this process and photographs the runs list, a run's charts, its
config and log tabs, the comparison of two runs and the users page in Debian's Chromium.
The events are written into the store by the tests' stand-in for the run's job
(``tests/stand_in_events.py``) and reach the pages over the real WebSockets.

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

from browser import PageErrors, chromium, log_in, serve_in_thread, wait_for  # noqa: E402
from platform_app import PASSWORD, add_user, make_app  # noqa: E402
from stand_in_events import append_status  # noqa: E402

import redfl  # noqa: E402
from redfl.platform.catalog import examples  # noqa: E402
from redfl.platform.store import Store, new_run_id  # noqa: E402

DIGITS = next(e for e in examples() if e.name == "digits_fedavg").config
SHOTS = ("runs.png", "run.png", "run-config.png", "compare.png", "users.png")
BUDGET = 250_000
"""Bytes a screenshot may take."""


def queue(app, config: str, owner: str, name: str, tags: list[str]) -> tuple[str, Path]:
    """A queued run of ``config``; its id and folder."""
    run_id = new_run_id()
    folder = app.state.settings.runs_dir / run_id
    folder.mkdir(parents=True)
    with app.state.sessions() as session:
        store = Store(session)
        store.create_run(
            run_id=run_id,
            name=name,
            owner_id=store.require_user(owner).id,
            project_id=None,
            config_text=config,
            config_format="toml",
            rounds=tomllib.loads(config)["federation"]["rounds"],
            run_dir=str(folder),
            tags=tags,
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


def finished(app, config: str, owner: str, name: str, tags: list[str]) -> str:
    """A run of ``config`` executed for real (local runtime) and stored as finished."""
    run_id, folder = queue(app, config, owner, name, tags)
    outcome = redfl.run(tomllib.loads(config), out=folder, overrides={"runtime": "local"})
    (folder / "run.log").write_text(
        f"run {run_id}: {outcome.status} after {outcome.summary['rounds']} rounds, "
        f"accuracy {outcome.summary['accuracy']:.4f}\n",
        encoding="utf-8",
    )
    append_status(app, run_id, "running")
    feed(app, run_id, folder)
    append_status(app, run_id, outcome.status)
    return run_id


def main() -> None:
    """Build the scene, then take the screenshots."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    app = make_app(Path(tempfile.mkdtemp(prefix="redfl-shots-")))
    for name, role in (("ada", "admin"), ("rita", "researcher"), ("sam", "researcher")):
        add_user(app, name, role)
    add_user(app, "vic", "viewer")

    slow = DIGITS.replace("lr = 0.3", "lr = 0.05").replace("rounds = 20", "rounds = 15")
    iid = DIGITS.replace('partition = "dirichlet"', 'partition = "iid"')
    first = finished(app, DIGITS, "rita", "digits-fedavg", ["baseline"])
    second = finished(app, slow, "sam", "digits-slow-lr", ["lr-sweep"])
    finished(app, iid, "rita", "digits-iid", ["baseline", "iid"])
    stopped, stopped_dir = queue(app, DIGITS, "sam", "digits-fedavg", ["lr-sweep"])
    (stopped_dir / "events.jsonl").write_text(
        (app.state.settings.runs_dir / first / "events.jsonl").read_text()
    )
    append_status(app, stopped, "running")
    feed(app, stopped, stopped_dir, upto=7)
    append_status(app, stopped, "stopped", "stopped by sam: enough")
    running, running_dir = queue(app, DIGITS, "rita", "digits-fedavg", [])
    (running_dir / "events.jsonl").write_text(
        (app.state.settings.runs_dir / first / "events.jsonl").read_text()
    )
    append_status(app, running, "running")
    feed(app, running, running_dir, upto=12)
    queue(
        app,
        next(e for e in examples() if e.name == "ring_dsgd").config,
        "sam",
        "digits-ring-dsgd",
        [],
    )

    with serve_in_thread(app) as base, chromium() as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 720})
        errors = PageErrors(page)
        log_in(page, base, "ada", PASSWORD)
        page.wait_for_selector("#runs-table tbody tr")
        page.wait_for_selector("#live-runs:text('live')")
        page.screenshot(path=out / "runs.png", full_page=True)
        page.goto(f"{base}/#/runs/{first}")
        wait_for(
            lambda: page.locator("#charts svg[data-last-round='20']").count() == 3, 30, "charts"
        )
        page.wait_for_selector("#live-state:text('finished')")
        page.screenshot(path=out / "run.png", full_page=True)
        page.click("#run-tabs [data-tab=config]")
        page.wait_for_selector("#run-config:has-text('digits')")
        page.screenshot(path=out / "run-config.png", full_page=True)
        page.goto(f"{base}/#/compare/{first},{second}")
        wait_for(lambda: page.locator("#compare-chart g.series").count() == 2, 30, "the overlay")
        page.screenshot(path=out / "compare.png", full_page=True)
        page.goto(f"{base}/#/users")
        page.wait_for_selector("#users-table tbody tr")
        page.screenshot(path=out / "users.png", full_page=True)
        if errors.messages:
            sys.exit(f"the pages logged errors: {errors.messages}")
    for name in SHOTS:
        size = (out / name).stat().st_size
        print(f"{out / name}: {size / 1000:.0f} kB")
        if size >= BUDGET:
            sys.exit(f"{name} is {size} bytes, over the {BUDGET / 1000:.0f} kB budget")


if __name__ == "__main__":
    main()
