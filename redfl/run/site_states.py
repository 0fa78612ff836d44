"""Each site's state in a run, read from its run folder: for dashboards and the platform.

The server's runtime reports ``site_joined``, ``site_round`` (a site's fit result was
accepted for that round) and ``site_left`` events, and every failure is a ``failure``
event naming its node, which is the site's name; :func:`site_states` folds them, in
order, into one :class:`~redfl.runtime.sites.roster.SiteState` per expected site (``[sites]
expected`` of the run's config), the type the running server's backend reports too. A run
folder being written can be read at any time.

Examples
--------
>>> events = [
...     {"type": "site_joined", "time": 10.0, "site": "a", "address": "10.0.0.1:5000"},
...     {"type": "site_round", "time": 11.0, "site": "a", "round": 1},
...     {"type": "failure", "time": 12.0, "failure": {"node_id": "b", "round": 1,
...      "phase": "fit", "reason": "site 'b' is not connected"}},
...     {"type": "site_left", "time": 13.0, "site": "a", "reason": "the run ended"},
... ]
>>> [(s.name, s.connected, s.rounds, s.failures, s.last_seen) for s in fold(["a", "b"], events)]
[('a', False, 1, 0, 13.0), ('b', False, 0, 1, None)]
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from redfl.run.prepare import saved_config
from redfl.runtime.sites.roster import SiteState


def fold(names: Sequence[str], events: Iterable[Mapping[str, Any]]) -> list[SiteState]:
    """The state of each of ``names`` after ``events`` (JSON objects of ``events.jsonl``)."""
    states = {name: SiteState(name) for name in names}
    for event in events:
        kind = event.get("type")
        if kind == "failure":
            node = event.get("failure", {}).get("node_id")
            if node in states:
                states[node] = replace(states[node], failures=states[node].failures + 1)
            continue
        state = states.get(str(event.get("site")))
        if state is None:
            continue
        seen = float(event.get("time", 0.0))
        if kind == "site_joined":
            state = replace(state, connected=True, address=str(event.get("address", "")), left=None)
        elif kind == "site_round":
            state = replace(state, rounds=state.rounds + 1)
        elif kind == "site_left":
            state = replace(state, connected=False, left=str(event.get("reason", "")))
        else:
            continue
        states[state.name] = replace(state, last_seen=seen)
    return [states[name] for name in names]


def site_states(folder: Path) -> list[SiteState]:
    """Each expected site's state in the run folder ``folder`` (empty when its config has
    no ``[sites]`` table); a half-written last line is skipped.

    Raises
    ------
    ConfigError
        If ``folder`` is not a run folder.
    """
    config = saved_config(folder)
    if config.sites is None:
        return []
    path = folder / "events.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    events = []
    for line in lines:
        try:
            events.append(json.loads(line))
        except ValueError:
            continue  # the line the server is writing now
    return fold(config.sites.expected, events)
