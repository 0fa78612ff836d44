"""``/api/strategies`` and ``/api/examples``: what a run may be made of."""

from __future__ import annotations

from fastapi import APIRouter

from redfl.platform import catalog
from redfl.platform.api.deps import Viewer
from redfl.platform.api.schemas import ExampleOut, StrategyOut

router = APIRouter(prefix="/api", tags=["catalog"])


@router.get("/strategies")
def list_strategies(_: Viewer) -> list[StrategyOut]:
    """The registered strategies with their papers and parameters."""
    return [StrategyOut(**s) for s in catalog.strategies()]


@router.get("/examples")
def list_examples(_: Viewer) -> list[ExampleOut]:
    """The bundled example configs (TOML), runnable as they are."""
    return [
        ExampleOut(name=e.name, description=e.description, config=e.config)
        for e in catalog.examples()
    ]
