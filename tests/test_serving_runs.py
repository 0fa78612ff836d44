"""The predict hook of the built-in models, what a run folder records of its class, and
everything about serving a folder that needs no Ray: loading it, options, records, tokens."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from redfl.core.config import ConfigError
from redfl.core.imports import ImportNotAllowedError
from redfl.data.digits import load_digits_arrays
from redfl.examples.digits import DigitsClient, DigitsOptions
from redfl.examples.torch_digits import TorchDigitsClient
from redfl.models.softmax import SoftmaxRegression
from redfl.models.torch_cnn import DigitsCNN, TorchTrainer
from redfl.nodes.predict import Predictor, find_predictor
from redfl.run.api import run
from redfl.run.deployments import (
    KEY_FILE,
    DeploymentRecord,
    DeploymentStore,
    TokenEntry,
)
from redfl.run.folder import load_parameters, save_parameters
from redfl.run.serving import (
    ServeOptions,
    default_name,
    issue_token,
    load_run,
    revoke_tokens,
)
from redfl.runtime.serving_tokens import TokenCheck, TokenError, TokenKey

DIGITS: dict[str, Any] = {
    "federation": {"rounds": 2, "runtime": "local", "name": "digits"},
    "client": {
        "target": "redfl.examples.digits:DigitsClient",
        "num_clients": 4,
        "options": {"epochs": 2, "lr": 0.3},
    },
}


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("runs") / "digits-run"
    outcome = run(DIGITS, out=folder)
    assert outcome.status == "succeeded"
    return folder


# the hook -------------------------------------------------------------------------------


def test_softmax_predict_is_the_softmax_of_the_logits() -> None:
    model = SoftmaxRegression(num_features=5, num_classes=3)
    rng = np.random.default_rng(3)
    parameters = {
        "weight": rng.normal(size=(5, 3)).astype(np.float32),
        "bias": rng.normal(size=3).astype(np.float32),
    }
    x = rng.normal(size=(7, 5))
    logits = x @ parameters["weight"].astype(np.float64) + parameters["bias"]
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    outputs = model.predict(parameters, x)
    assert outputs.dtype == np.float32 and outputs.shape == (7, 3)
    np.testing.assert_allclose(outputs, expected, rtol=1e-5)
    with pytest.raises(ValueError, match=re.escape("inputs must have shape (n, 5), got (7,)")):
        model.predict(parameters, x[:, 0])


def test_the_digits_hook_agrees_with_evaluate(digits_run: Path) -> None:
    parameters, _ = load_parameters(digits_run / "model.safetensors")
    x, y = load_digits_arrays()
    predictor = find_predictor(DigitsClient, DIGITS["client"]["options"])
    outputs = predictor(parameters, x)
    _, accuracy = DigitsOptions().model().evaluate(parameters, x, y)
    assert float(np.mean(outputs.argmax(axis=1) == y)) == accuracy
    assert accuracy > 0.8
    np.testing.assert_allclose(outputs.sum(axis=1), 1.0, rtol=1e-5)


def test_the_torch_hook_agrees_with_its_forward_pass_and_evaluate() -> None:
    x, y = load_digits_arrays()
    x, y = np.array(x[:400]), y[:400]
    trainer = TorchTrainer(lr=0.1, epochs=10)
    start = TorchTrainer.init_parameters(seed=4)
    parameters, _ = trainer.fit(DigitsCNN(), start, x[:300], y[:300], np.random.default_rng(0))
    predictor = find_predictor(TorchDigitsClient, {})
    assert predictor.input_shape == (64,)
    assert predictor.source == "redfl.examples.torch_digits:TorchDigitsClient.model"
    outputs = predictor(parameters, x[300:])
    reference = DigitsCNN()
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in parameters.items()})
    with torch.no_grad():
        logits = reference(torch.from_numpy(x[300:]).reshape(-1, 1, 8, 8))
    np.testing.assert_allclose(outputs, torch.softmax(logits, 1).numpy(), rtol=1e-5, atol=1e-7)
    _, accuracy = TorchTrainer.evaluate(DigitsCNN(), parameters, x[300:], y[300:])
    assert int((outputs.argmax(axis=1) == y[300:]).sum()) == round(accuracy * 100)
    assert accuracy > 0.5
    with pytest.raises(ValueError, match=re.escape("inputs must have shape (n, 64), got (2, 8)")):
        predictor(parameters, np.zeros((2, 8)))


def test_the_clients_own_predict_comes_before_its_models() -> None:
    class Both:
        input_shape = (1,)

        def __init__(self, scale: float = 1.0) -> None:
            self.scale = scale
            self.model = SoftmaxRegression()

        def predict(self, parameters: Any, inputs: np.ndarray) -> np.ndarray:
            return inputs * self.scale

    predictor = find_predictor(Both, {"scale": 3.0})
    assert predictor({}, np.ones((2, 1))).tolist() == [[3.0], [3.0]]
    assert predictor.source.endswith("Both")


def test_a_class_without_a_hook_or_with_a_bad_shape_is_refused() -> None:
    class Plain:
        model = object()

    with pytest.raises(ValueError, match="Plain offers no predict\\(parameters, inputs\\)"):
        find_predictor(Plain, {})

    class Flat:
        input_shape: ClassVar[list[int]] = [64]

        def predict(self, parameters: Any, inputs: np.ndarray) -> np.ndarray:
            return inputs

    with pytest.raises(ValueError, match=re.escape("Flat.input_shape must be a tuple of positive")):
        find_predictor(Flat, {})


def test_outputs_must_have_one_row_per_input_row() -> None:
    predictor = Predictor(lambda p, x: np.zeros(3), None, "m:C")
    with pytest.raises(TypeError, match=re.escape("m:C.predict returned shape (3,) for 2 input")):
        predictor({}, np.zeros((2, 4)))


# run folders ----------------------------------------------------------------------------


def test_the_model_file_names_the_class_that_trained_it(digits_run: Path) -> None:
    _, metadata = load_parameters(digits_run / "model.safetensors")
    assert metadata["client"] == {
        "target": "redfl.examples.digits:DigitsClient",
        "options": {"epochs": 2, "lr": 0.3},
    }
    served = load_run(digits_run)
    assert served.client == metadata["client"]
    assert served.options == DigitsOptions(epochs=2, lr=0.3).model_dump()
    assert served.predictor.input_shape == (64,)
    assert served.model == (digits_run / "model.safetensors").read_bytes()
    payload = served.payload("d1")
    assert (payload.name, payload.target) == ("d1", "redfl.examples.digits:DigitsClient")
    assert payload.info == {
        "run": "digits-run",
        "model": "redfl.examples.digits:DigitsClient",
        "rounds": 2,
        "accuracy": metadata["accuracy"],
    }


def test_a_model_file_without_its_class_falls_back_to_config_json(
    digits_run: Path, tmp_path: Path
) -> None:
    old = tmp_path / "old-run"
    old.mkdir()
    parameters, metadata = load_parameters(digits_run / "model.safetensors")
    del metadata["client"]
    save_parameters(old / "model.safetensors", parameters, metadata)
    (old / "config.json").write_text((digits_run / "config.json").read_text())
    assert load_run(old).client == {
        "target": "redfl.examples.digits:DigitsClient",
        "options": {"epochs": 2, "lr": 0.3},
    }
    (old / "config.json").unlink()
    with pytest.raises(ConfigError, match="is not a run folder"):
        load_run(old)


def test_folders_that_cannot_be_served_say_why(digits_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a folder"):
        load_run(tmp_path / "missing")
    with pytest.raises(ConfigError, match=re.escape("has no model.safetensors")):
        load_run(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="not a model file"):
        load_run(tmp_path)
    echo = {
        "federation": {"rounds": 1, "runtime": "local"},
        "client": {"target": "redfl.examples.echo:EchoClient", "num_clients": 2},
    }
    echoed = run(echo, out=tmp_path / "echo").folder
    with pytest.raises(
        ConfigError, match=re.escape("client.target: redfl.examples.echo:EchoClient offers")
    ):
        load_run(echoed)
    digits = "redfl.examples.digits:DigitsClient"
    with pytest.raises(
        ConfigError, match=re.escape("client.options.lr: Input should be greater than 0")
    ):
        load_run(digits_run, client={"target": digits, "options": {"lr": -1}})
    with pytest.raises(ConfigError, match=re.escape("cannot import 'redfl.examples.nope:C'")):
        load_run(digits_run, client={"target": "redfl.examples.nope:C"})
    with pytest.raises(
        ConfigError,
        match=re.escape("TorchDigitsClient.model.predict fails with the model's own param"),
    ):
        load_run(digits_run, client={"target": "redfl.examples.torch_digits:TorchDigitsClient"})


def test_an_allow_list_is_checked_before_the_class_is_imported(digits_run: Path) -> None:
    assert load_run(digits_run, allowed_prefixes=["redfl.examples"]).client["target"]
    with pytest.raises(ImportNotAllowedError, match=r"client\.target: .* is not under an allowed"):
        load_run(digits_run, allowed_prefixes=["mylab"])


# options --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicas": 0}, "replicas: Input should be greater than or equal to 1 (got 0)"),
        ({"replicas": 2, "autoscale": "1:3"}, "autoscale: give replicas or autoscale, not both"),
        ({"autoscale": "3:2"}, "autoscale: must be MIN:MAX with 0 <= MIN <= MAX"),
        ({"autoscale": "0:0"}, "autoscale: must be MIN:MAX"),
        ({"autoscale": "two"}, "autoscale: String should match pattern"),
        ({"max_batch": 0}, "max_batch: Input should be greater than or equal to 1"),
        ({"name": "a/b"}, "name: String should match pattern"),
        ({"port": 70000}, "port: Input should be less than or equal to 65535"),
        ({"address": "nowhere"}, "address: must be 'auto', 'local', 'ray://host:port'"),
        ({"tls_cert": "/etc/hostname"}, "tls_key: tls_cert and tls_key go together"),
        ({"tls_cert": "/no/cert", "tls_key": "/no/key"}, "tls_cert: no such file (got '/no/cert')"),
        ({"replica_cpus": 0}, "replica_cpus: Input should be greater than 0"),
    ],
)
def test_bad_serving_options_name_the_option(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ServeOptions.of(**values)
    assert message in str(caught.value)


def test_scaling_from_the_options() -> None:
    assert ServeOptions.of().scaling().replicas == 1
    assert ServeOptions.of(replicas=3, replica_cpus=0.5).scaling().replicas == 3
    scaled = ServeOptions.of(autoscale="0:4").scaling()
    assert (scaled.replicas, scaled.autoscale) == (0, (0, 4))


def test_default_names_come_from_the_folder() -> None:
    assert default_name("runs/digits-20260101-120000-ab12cd") == "digits-20260101-120000-ab12cd"
    assert default_name("/tmp/my run (2)") == "my-run-2"
    assert default_name("x" * 100) == "x" * 64


# records and tokens ---------------------------------------------------------------------


def record(name: str, **changes: Any) -> DeploymentRecord:
    values: dict[str, Any] = {
        "name": name,
        "run": "/runs/r",
        "client": {"target": "m:C", "options": {}},
        "url": "http://127.0.0.1:8000/" + name,
        "address": "127.0.0.1:6379",
        "embedded": False,
        "pid": 1,
        "created": 0.0,
        "options": {},
        "tokens": (TokenEntry(id="t1", expires_at=2e9),),
    }
    return DeploymentRecord.model_validate({**values, **changes})


def test_records_and_secrets_are_private(tmp_path: Path) -> None:
    store = DeploymentStore(tmp_path / "home")
    folder = store.create("d1")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    secret = store.write_secret("d1", KEY_FILE, b"secret")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    store.save(record("d1"))
    assert store.load("d1") == record("d1")
    assert store.names() == ["d1"]
    with pytest.raises(ConfigError, match="a deployment named d1 exists"):
        store.create("d1")
    with pytest.raises(ConfigError, match=r"no deployment named d2 in .* \(recorded: d1\)"):
        store.load("d2")
    store.remove("d1")
    assert store.names() == []


def test_the_home_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDFL_MODELS_HOME", str(tmp_path / "elsewhere"))
    assert DeploymentStore().home == tmp_path / "elsewhere"
    monkeypatch.delenv("REDFL_MODELS_HOME")
    assert DeploymentStore().home == Path.home() / ".redfl" / "models"


def test_revoked_ids_are_those_not_expired_yet() -> None:
    tokens = (
        TokenEntry(id="a", expires_at=100.0, revoked=True),
        TokenEntry(id="b", expires_at=300.0, revoked=True),
        TokenEntry(id="c", expires_at=300.0),
    )
    assert record("d1", tokens=tokens).revoked(now=200.0) == ("b",)


def test_another_token_is_signed_by_the_deployments_key_and_recorded(tmp_path: Path) -> None:
    store = DeploymentStore(tmp_path)
    key = TokenKey.generate()
    store.create("d1")
    store.write_secret("d1", KEY_FILE, key.to_pem())
    store.save(record("d1"))
    issued = issue_token("d1", days=2.0, home=tmp_path)
    check = TokenCheck(key.public_pem(), "d1")
    assert check.verify(issued.token) == issued.token_id
    with pytest.raises(TokenError, match="token for another deployment"):
        TokenCheck(key.public_pem(), "d2").verify(issued.token)
    ids = [t.id for t in store.load("d1").tokens]
    assert ids == ["t1", issued.token_id]
    with pytest.raises(ConfigError, match=re.escape("days: must be > 0 and <= 3650 (got 0)")):
        issue_token("d1", days=0, home=tmp_path)


def test_revoking_checks_the_ids_before_touching_anything(tmp_path: Path) -> None:
    store = DeploymentStore(tmp_path)
    store.create("d1")
    store.save(record("d1"))
    with pytest.raises(ConfigError, match="token id zz: not a token of d1 \\(its tokens: t1\\)"):
        revoke_tokens("d1", ["zz"], home=tmp_path)
    with pytest.raises(ConfigError, match="give the ids of the tokens to revoke"):
        revoke_tokens("d1", [], home=tmp_path)
    assert json.loads((tmp_path / "d1" / "deployment.json").read_text())["tokens"] == [
        {"id": "t1", "expires_at": 2e9, "revoked": False}
    ]
