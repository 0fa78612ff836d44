"""The demo federation from Python: what `make run` does, through redfl.run.

Usage: .venv/bin/python examples/run_demo.py [RUN_FOLDER] [ROUNDS]
"""

import sys
from pathlib import Path

import redfl

CONFIG = Path(__file__).resolve().parent / "digits_fedavg.toml"

out = sys.argv[1] if len(sys.argv) > 1 else None
overrides = {"rounds": int(sys.argv[2])} if len(sys.argv) > 2 else {}
outcome = redfl.run(CONFIG, out=out, overrides=overrides)
accuracy = outcome.summary["accuracy"]
print(f"{outcome.status}: accuracy {accuracy:.4f} after {outcome.summary['rounds']} rounds")
print(f"run folder {outcome.folder}")
sys.exit(0 if outcome.status == "succeeded" else 1)
