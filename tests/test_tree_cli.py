"""``redfl tree``: exact analysis lines and JSON, option errors, the provisioning folder, and
refusals that write nothing."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import Result
from cryptography import x509
from typer.testing import CliRunner

from redfl.cli import app
from redfl.provision.folder import CLIENTS_PER_LCP, FIXED_FILES
from redfl.run.config import parse_config
from redfl.topology import load_tree, relay_tree
from redfl.topology.tree import RelayTree
from redfl.trust import Bundle, TrustHome

KEYS = [
    "relays_leaf",
    "relays_nonleaf",
    "relays_total",
    "clients_leaf",
    "clients_nonleaf",
    "clients_total",
    "total_sites",
]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, ["tree", *args])


def error_line(result: Result) -> str:
    """The one stderr line of a refused command (exit 2, nothing on stdout)."""
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("redfl: error: ")
    return lines[0]


def everything_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


# -- analysis ------------------------------------------------------------------------------------


def test_analysis_prints_exactly_three_lines(tmp_path: Path) -> None:
    result = invoke("-d", "2", "-w", "2", "-c", "3", "-a", "-r", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "Relays:  leaf=4; non-leaf=2; total=6",
        "Clients: leaf=12; non-leaf=6; total=18",
        "Total Sites: 25",
    ]
    assert result.stderr == ""
    assert everything_under(tmp_path) == []  # analysis writes nothing


def test_analysis_lcp_only_long_options() -> None:
    result = invoke("--depth", "3", "--width", "3", "--clients", "2", "--lcp-only", "--analyze")
    assert result.stdout.splitlines() == [
        "Relays:  leaf=27; non-leaf=12; total=39",
        "Clients: leaf=54; non-leaf=0; total=54",
        "Total Sites: 94",
    ]


@pytest.mark.parametrize(
    ("depth", "width", "clients", "lcp_only"),
    [(1, 2, 2, False), (2, 2, 3, False), (3, 4, 5, True), (4, 7, 9, False), (5, 9, 9, False)],
)
def test_analysis_json(depth: int, width: int, clients: int, lcp_only: bool) -> None:
    args = ["-d", str(depth), "-w", str(width), "-c", str(clients), "-a", "--json"]
    result = invoke(*args, *(["-l"] if lcp_only else []))
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1
    data = json.loads(result.stdout)
    assert list(data) == KEYS
    relays = sum(width**k for k in range(1, depth + 1))
    aggregators = 0 if lcp_only else relays
    lcps = clients * width**depth
    assert data == {
        "relays_leaf": width**depth,
        "relays_nonleaf": relays - width**depth,
        "relays_total": relays,
        "clients_leaf": lcps,
        "clients_nonleaf": aggregators,
        "clients_total": aggregators + lcps,
        "total_sites": relays + aggregators + lcps + 1,
    }


def test_analysis_ignores_max_sites() -> None:
    result = invoke("-d", "5", "-w", "9", "-c", "9", "-a", "-m", "10")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[-1] == "Total Sites: 664300"


# -- bad options ---------------------------------------------------------------------------------

SHAPE = ["-d", "2", "-w", "2", "-c", "3"]


@pytest.mark.parametrize(
    ("option", "value", "allowed"),
    [
        ("depth", "0", "1..5"),
        ("depth", "6", "1..5"),
        ("width", "1", "2..9"),
        ("width", "12", "2..9"),
        ("clients", "1", "2..9"),
        ("clients", "10", "2..9"),
        ("clients", "-3", "2..9"),
    ],
)
def test_out_of_range_exits_2_naming_option_value_and_range(
    tmp_path: Path, option: str, value: str, allowed: str
) -> None:
    args = {"depth": "2", "width": "2", "clients": "3", option: value}
    for analyze in ([], ["-a"]):
        result = invoke(*(f"--{k}={v}" for k, v in args.items()), *analyze, "-r", str(tmp_path))
        line = error_line(result)
        assert line == f"redfl: error: --{option} {value} is out of range {allowed}"
    assert everything_under(tmp_path) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-w", "2", "-c", "3"], "--depth is required (range 1..5)"),
        (["-d", "2", "-c", "3", "-a"], "--width is required (range 2..9)"),
        (["-d", "2", "-w", "3"], "--clients is required (range 2..9)"),
        ([*SHAPE, "-m", "0"], "--max-sites 0 is out of range 1 or more"),
        ([*SHAPE, "--rp", "0"], "--rp 0 is out of range 1..65535"),
        ([*SHAPE, "--rp", "70000"], "--rp 70000 is out of range 1..65535"),
        ([*SHAPE, "-p", "a b"], "--project-name 'a b' must be 1 to 64 letters, digits"),
        ([*SHAPE, "-p", ".."], "--project-name '..' must be 1 to 64"),
        ([*SHAPE, "-p", "../up"], "--project-name '../up' must be 1 to 64"),
        ([*SHAPE, "--rp", "65520"], "--rp 65520: the 25 sites need ports 65521..65545, over 65535"),
    ],
)
def test_other_bad_options(tmp_path: Path, args: list[str], message: str) -> None:
    line = error_line(invoke(*args, "-r", str(tmp_path)))
    assert line.startswith(f"redfl: error: {message}")
    assert everything_under(tmp_path) == []


def test_over_max_sites_refuses_with_the_count_and_writes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "out"
    line = error_line(invoke("-d", "3", "-w", "3", "-c", "3", "-r", str(root)))
    assert line == "redfl: error: the tree has 160 sites, over --max-sites 100; nothing written"
    assert not root.exists()
    line = error_line(invoke(*SHAPE, "-m", "24", "-r", str(root)))
    assert "the tree has 25 sites, over --max-sites 24" in line
    assert not root.exists()
    result = invoke(*SHAPE, "-m", "25", "-r", str(root))  # the limit is inclusive
    assert result.exit_code == 0, result.stderr


# -- the provisioning folder ---------------------------------------------------------------------


def provision(tmp_path: Path, *extra: str) -> Path:
    result = invoke(*SHAPE, "-r", str(tmp_path), "-p", "demo", "--rp", "9100", *extra)
    assert result.exit_code == 0, result.stderr
    folder = tmp_path / "demo"
    assert result.stdout == (
        f"wrote {folder}: 25 sites (6 relays, 6 aggregators, 12 LCPs); routing proxy port 9100\n"
    )
    return folder


TRUST_FILES = ("ca.key", "ca.pem", "crl.pem", "register.json", "server.key", "server.pem")


def kit_files(tree: RelayTree, hosts: tuple[str, ...] = ("local",)) -> list[str]:
    """Every file of a provisioning folder for ``tree`` (.lock: the trust home's lock)."""
    members = ["server", "proxy", "operator", *(s.name for s in tree.of_kind("relay"))]
    members += [s.name for s in tree.lcps]
    return sorted(
        [
            *FIXED_FILES,
            *(f"scripts/start_{h}.sh" for h in hosts),
            *(f"trust/{f}" for f in (*TRUST_FILES, ".lock")),
            *(f"credentials/{m}.json" for m in members),
        ]
    )


def test_writes_the_folder(tmp_path: Path) -> None:
    folder = provision(tmp_path)
    tree_file = load_tree(folder / "tree.json")
    files = kit_files(tree_file.tree)
    folders = ["demo", "demo/credentials", "demo/scripts", "demo/trust"]
    assert everything_under(tmp_path) == sorted([*folders, *(f"demo/{f}" for f in files)])
    assert (tree_file.project, tree_file.rp_port) == ("demo", 9100)
    assert tree_file.tree == relay_tree(2, 2, 3, base_port=9101)
    raw = json.loads((folder / "tree.json").read_text(encoding="utf-8"))
    assert raw["sites"][1] == {"name": "relay-1", "kind": "relay", "parent": "server", "port": 9102}


def test_the_secrets_are_private_and_every_member_has_a_credential(tmp_path: Path) -> None:
    folder = provision(tmp_path)
    for private in ("ray_token", "trust/ca.key", "credentials/lcp-2-1-3.json"):
        assert stat.S_IMODE((folder / private).stat().st_mode) == 0o600, private
    for closed in ("credentials", "trust"):
        assert stat.S_IMODE((folder / closed).stat().st_mode) == 0o700, closed
    token = (folder / "ray_token").read_text()
    assert len(token) == 64 and int(token, 16) >= 0
    home = TrustHome(folder / "trust")
    kinds = {r.name: r.kind for r in home.register().records}
    assert kinds["lcp-2-1-3"] == "lcp" and kinds["relay-1-2"] == "relay"
    assert (kinds["proxy"], kinds["operator"], kinds["server"]) == ("proxy", "operator", "server")
    assert "agg-1" not in kinds  # aggregators are folds, not processes: no credential
    bundle = Bundle.load(folder / "credentials" / "lcp-2-1-3.json")
    assert bundle.identity.name == "lcp-2-1-3" and bundle.ca_pem == home.ca_pem


def test_lcp_map(tmp_path: Path) -> None:
    folder = provision(tmp_path)
    lcp_map = json.loads((folder / "lcp_map.json").read_text(encoding="utf-8"))
    tree = load_tree(folder).tree
    assert list(lcp_map) == [s.name for s in tree.lcps]
    assert len(lcp_map) == 12
    assert lcp_map["lcp-2-1-3"] == {"host": "127.0.0.1", "port": tree.site("lcp-2-1-3").port}
    ports = [entry["port"] for entry in lcp_map.values()]
    assert len(set(ports)) == 12 and 9100 not in ports
    assert all(set(entry) == {"host", "port"} for entry in lcp_map.values())


def test_hierarchy_toml(tmp_path: Path) -> None:
    folder = provision(tmp_path)
    data = tomllib.loads((folder / "hierarchy.toml").read_text(encoding="utf-8"))
    topology = data.pop("topology")
    assert topology == {
        "schema": "hierarchical",
        "tree_file": "tree.json",
        "clients_per_lcp": CLIENTS_PER_LCP,
    }
    assert (folder / topology["tree_file"]).is_file()
    assert data["client"]["target"] == "redfl.examples.digits:DigitsClient"
    assert data["client"]["num_clients"] == CLIENTS_PER_LCP * 12
    assert data["federation"]["name"] == "demo"
    config = parse_config(data)  # everything but [topology] is today's config shape
    assert config.strategy.name == "fedavg"
    assert config.evaluation.central == "redfl.examples.digits:central_evaluation"


def test_start_scripts(tmp_path: Path) -> None:
    folder = provision(tmp_path)
    scripts = folder / "scripts"
    assert sorted(p.name for p in scripts.iterdir()) == [
        "env.sh",
        "run_hierarchy.sh",
        "start_local.sh",
    ]
    for script in scripts.iterdir():
        assert script.stat().st_mode & stat.S_IXUSR, script
        subprocess.run(["bash", "-n", str(script)], check=True)
    env = (scripts / "env.sh").read_text(encoding="utf-8")
    assert f'PY="${{REDFL_PYTHON:-{sys.executable}}}"' in env  # the interpreter, not a bare redfl
    assert 'export RAY_AUTH_MODE=token\nexport RAY_AUTH_TOKEN_PATH="$DIR/ray_token"' in env
    assert "HEAD=127.0.0.1:6379" in env
    start = (scripts / "start_local.sh").read_text(encoding="utf-8")
    assert "redfl" not in start.replace("redfl.edge.cli", "").replace("redfl tree", "")
    assert (
        'run proxy "${EDGE[@]}" proxy --tree "$DIR" --tls --host 127.0.0.1 --port 9100' in start
    )  # the tree's ports: the proxy on --rp, the server on its site's port
    assert '--job "$DIR/edge_job.json" --host 127.0.0.1 --port 9101' in start
    assert (
        'run lcp-2-2-3 "${EDGE[@]}" lcp --tree "$DIR" --name lcp-2-2-3 '
        "--server https://127.0.0.1:9112 --host 127.0.0.1 --port 9125" in start
    )  # an LCP syncs through its leaf relay (relay-2-2, site 11, on 9112)
    assert (
        'run relay-2-2 "${EDGE[@]}" relay --tree "$DIR" --name relay-2-2 '
        "--upstream https://127.0.0.1:9104 --host 127.0.0.1 --port 9112" in start
    )  # and that relay through its parent relay (relay-2, site 3)
    assert "--head --port 6379 --include-dashboard false" in start
    run = (scripts / "run_hierarchy.sh").read_text(encoding="utf-8")
    assert 'exec "$PY" -m redfl.cli run "$DIR/hierarchy.toml" --address "$HEAD" "$@"' in run
    unknown = subprocess.run(
        [str(scripts / "start_local.sh"), "gpu"], capture_output=True, text=True, check=False
    )
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == (
        "start_local.sh: unknown part 'gpu' (this host runs: ray server relays lcps proxy)"
    )
    missing = subprocess.run(
        [str(scripts / "run_hierarchy.sh")],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "REDFL_PYTHON": "/nonexistent/python"},
    )
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        "run_hierarchy.sh: no Python interpreter at /nonexistent/python (set REDFL_PYTHON)"
    )


def test_lcp_only_folder_and_json_summary(tmp_path: Path) -> None:
    result = invoke(*SHAPE, "-l", "-r", str(tmp_path), "-p", "edge", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["folder"] == str(tmp_path / "edge")
    assert summary["files"] == kit_files(load_tree(tmp_path / "edge").tree)
    assert (summary["total_sites"], summary["clients_nonleaf"], summary["rp_port"]) == (19, 0, 9000)
    tree = load_tree(tmp_path / "edge").tree
    assert tree.lcp_only and tree.of_kind("aggregator") == ()
    assert tree.site("lcp-1-2-3").parent == "server"
    data = tomllib.loads((tmp_path / "edge" / "hierarchy.toml").read_text(encoding="utf-8"))
    assert data["client"]["num_clients"] == CLIENTS_PER_LCP * 12


def test_never_writes_into_a_non_empty_folder(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine", encoding="utf-8")
    line = error_line(invoke(*SHAPE, "-r", str(tmp_path), "-p", "demo"))
    assert line == f"redfl: error: {folder} exists and is not empty; refusing to write into it"
    assert everything_under(tmp_path) == ["demo", "demo/notes.txt"]
    assert (folder / "notes.txt").read_text(encoding="utf-8") == "mine"
    (tmp_path / "plain").write_text("a file", encoding="utf-8")
    line = error_line(invoke(*SHAPE, "-r", str(tmp_path), "-p", "plain"))
    assert line == f"redfl: error: {tmp_path / 'plain'} exists and is not a folder"
    assert (tmp_path / "plain").read_text(encoding="utf-8") == "a file"


def test_an_empty_folder_is_filled(tmp_path: Path) -> None:
    (tmp_path / "demo").mkdir()
    provision(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["demo"]  # no staging folder left behind
    assert load_tree(tmp_path / "demo").project == "demo"


def test_default_root_dir_is_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke(*SHAPE)
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "hierarchy" / "tree.json").is_file()


# -- hosts -----------------------------------------------------------------------------------

HOSTS = """\
ray_port = 7000

[hosts.alpha]
address = "10.0.0.1"
head = true
cpus = 0

[hosts.beta]
address = "10.0.0.2"
sites = ["agg-2"]
ray_ports = 20000
object_store_mb = 200

[hosts.gamma]
address = "gamma.example.org"
sites = ["lcp-1-1-1", "agg-1-2"]
"""


def with_hosts(tmp_path: Path, text: str = HOSTS) -> Result:
    hosts = tmp_path / "HOSTS.toml"
    hosts.write_text(text, encoding="utf-8")
    return invoke(*SHAPE, "-r", str(tmp_path / "out"), "-p", "demo", "--hosts", str(hosts))


def test_hosts_place_subtrees_pin_them_and_get_a_script_each(tmp_path: Path) -> None:
    result = with_hosts(tmp_path)
    assert result.exit_code == 0, result.stderr
    folder = tmp_path / "out" / "demo"
    placed = json.loads((folder / "hosts.json").read_text(encoding="utf-8"))
    assert (placed["head"], placed["ray_port"]) == ("alpha", 7000)
    beta, gamma = placed["hosts"]["beta"], placed["hosts"]["gamma"]
    assert beta["pins"] == ["agg-2"] and gamma["pins"] == ["agg-1-2", "lcp-1-1-1"]
    assert beta["sites"][:4] == ["relay-2", "agg-2", "relay-2-1", "agg-2-1"]  # relays follow
    assert "relay-1-2" in gamma["sites"] and "relay-1-1" not in gamma["sites"]  # spread: head
    assert "relay-1-1" in placed["hosts"]["alpha"]["sites"]
    lcp_map = json.loads((folder / "lcp_map.json").read_text(encoding="utf-8"))
    assert lcp_map["lcp-2-1-1"]["host"] == "10.0.0.2"
    assert lcp_map["lcp-1-1-1"]["host"] == "gamma.example.org"
    assert lcp_map["lcp-1-1-2"]["host"] == "10.0.0.1"
    topology = tomllib.loads((folder / "hierarchy.toml").read_text(encoding="utf-8"))["topology"]
    assert topology["pin"] == ["agg-2", "agg-1-2", "lcp-1-1-1"]  # site order
    parse_config(tomllib.loads((folder / "hierarchy.toml").read_text(encoding="utf-8")))
    scripts = sorted(p.name for p in (folder / "scripts").iterdir())
    assert scripts == [
        "env.sh",
        "run_hierarchy.sh",
        "start_alpha.sh",
        "start_beta.sh",
        "start_gamma.sh",
    ]
    beta_script = (folder / "scripts" / "start_beta.sh").read_text(encoding="utf-8")
    assert (
        "start --block --disable-usage-stats --node-ip-address 10.0.0.2 --address "
        "10.0.0.1:7000 --resources '{\"redfl-site-agg-2\":1}' --object-store-memory 209715200 "
        "--node-manager-port 20000 --object-manager-port 20001" in beta_script
    )
    assert "--min-worker-port 20010 --max-worker-port 20199" in beta_script
    assert "PARTS=(ray relays lcps)" in beta_script  # no server or proxy off the head
    alpha = (folder / "scripts" / "start_alpha.sh").read_text(encoding="utf-8")
    assert "--head --port 7000 --include-dashboard false --num-cpus 0" in alpha
    assert "--tls --host 10.0.0.1 --port 9000" in alpha
    gamma_script = (folder / "scripts" / "start_gamma.sh").read_text(encoding="utf-8")
    assert '--resources \'{"redfl-site-agg-1-2":1,"redfl-site-lcp-1-1-1":1}\'' in (gamma_script)
    for script in (folder / "scripts").iterdir():
        subprocess.run(["bash", "-n", str(script)], check=True)
    # each listening member's certificate names the address of its host
    lcp = Bundle.load(folder / "credentials" / "lcp-2-1-1.json")
    cert = x509.load_pem_x509_certificate(lcp.cert_pem.encode())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["10.0.0.2"]
    proxy = Bundle.load(folder / "credentials" / "proxy.json")
    extensions = x509.load_pem_x509_certificate(proxy.cert_pem.encode()).extensions
    san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.1"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[hosts.a]\naddress = "h"\n', "exactly one host has head = true, got 0"),
        (
            '[hosts.a]\naddress = "h"\nhead = true\n[hosts.b]\naddress = "i"\nhead = true\n',
            "exactly one host has head = true, got 2 (['a', 'b'])",
        ),
        (
            '[hosts.a]\naddress = "h"\nhead = true\nsites = ["agg-9"]\n',
            "hosts.a.sites: 'agg-9' is not an aggregator or LCP of the tree",
        ),
        (
            '[hosts.a]\naddress = "h"\nhead = true\nsites = ["relay-1"]\n',
            "hosts.a.sites: 'relay-1' is not an aggregator or LCP of the tree",
        ),
        (
            '[hosts.a]\naddress = "h"\nhead = true\nsites = ["agg-1", "agg-1-2"]\n',
            "hosts.a.sites: 'agg-1-2' lies inside the subtree of 'agg-1' (listed for host 'a')",
        ),
        (
            '[hosts.a]\naddress = "h k"\nhead = true\n',
            "hosts.a.address: an address is an IP address or a DNS name (got 'h k')",
        ),
        (
            '[hosts.a]\naddress = "h"\nhead = true\nray_ports = 80\n',
            "hosts.a.ray_ports: Input should be greater than or equal to 1024 (got 80)",
        ),
        ('ray_port = 0\n[hosts.a]\naddress = "h"\nhead = true\n', "ray_port: Input should be"),
        ('[hosts.a]\naddress = "h"\nhead = true\ncolor = 1\n', "hosts.a.color: unknown key"),
        ("[hosts]\n", "hosts: Dictionary should have at least 1 item"),
        ("[hosts.a\n", "Expected ']'"),
    ],
)
def test_bad_hosts_exit_2_naming_the_field_and_write_nothing(
    tmp_path: Path, text: str, message: str
) -> None:
    line = error_line(with_hosts(tmp_path, text))
    assert line.startswith(f"redfl: error: --hosts {tmp_path / 'HOSTS.toml'}: "), line
    assert message in line, line
    assert not (tmp_path / "out").exists()
