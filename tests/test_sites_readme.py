"""The README's "Deploying across sites" runs as written: its shell blocks in order (the
preparation, the server's terminal, one site per terminal, then the simulation of the same
config), in a scratch copy of the repository's ``examples/``, with a free port in place of
8443. The sites' run and the simulated one write the same model."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from safetensors.numpy import load_file
from waiting import free_port

REPO = Path(__file__).resolve().parents[1]
SECTION = (REPO / "README.md").read_text().split("## Deploying across sites", 1)[1]
SECTION = SECTION.split("\n## ", 1)[0]
BLOCKS = re.findall(r"^```sh\n(.*?)^```", SECTION, re.S | re.M)


def test_the_section_has_its_four_shell_blocks() -> None:
    assert len(BLOCKS) == 4
    assert BLOCKS[1].strip().startswith("redfl run ") and len(BLOCKS[2].strip().splitlines()) == 2


def test_the_one_machine_path_runs_as_written(tmp_path: Path) -> None:
    port = str(free_port())
    blocks = [block.replace("8443", port) for block in BLOCKS]
    (tmp_path / "examples").mkdir()
    example = (REPO / "examples" / "sites_digits.toml").read_text().replace("8443", port)
    (tmp_path / "examples" / "sites_digits.toml").write_text(example)
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
        "PYTHONPATH": str(REPO),
        "PYTHONUNBUFFERED": "1",
    }
    prepare = subprocess.run(
        ["bash", "-ec", blocks[0]], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert prepare.returncode == 0, prepare.stderr
    deploy = tmp_path / "deploy"
    logs = [(deploy / f"terminal-{i}.log").open("w") for i in (1, 2, 3)]
    commands = [blocks[1].strip(), *blocks[2].strip().splitlines()]
    terminals = [
        subprocess.Popen(["bash", "-c", command], cwd=deploy, env=env, stdout=log, stderr=log)
        for command, log in zip(commands, logs, strict=True)
    ]
    try:
        codes = [terminal.wait(300) for terminal in terminals]
    finally:
        for terminal in terminals:
            terminal.kill()
    outputs = [(deploy / f"terminal-{i}.log").read_text() for i in (1, 2, 3)]
    assert codes == [0, 0, 0], outputs
    assert "final accuracy" in outputs[0] and "redfl: site hospital-b joined from" in outputs[0]
    assert re.search(r"site hospital-a: round 5: fit 719 examples, loss [\d.]+ \(", outputs[1])
    assert "site hospital-b: the run " in outputs[2] and outputs[2].rstrip().endswith("has ended")
    simulate = subprocess.run(
        ["bash", "-ec", blocks[3]], cwd=deploy, env=env, capture_output=True, text=True
    )
    assert simulate.returncode == 0, simulate.stderr
    at_sites = load_file(str(deploy / "sites-run" / "model.safetensors"))
    simulated = load_file(str(deploy / "simulated" / "model.safetensors"))
    assert {k: v.tobytes() for k, v in at_sites.items()} == {
        k: v.tobytes() for k, v in simulated.items()
    }
    shutil.rmtree(deploy / "fed-home")  # the CA key does not outlive the test
