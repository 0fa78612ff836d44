"""The PyTorch adapter (state_dict <-> named arrays) and the torch CNN digits client."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from redfl import FedAvg, ResourcesConfig, StarFederation
from redfl.data.digits import load_digits_arrays
from redfl.examples.torch_digits import TorchDigitsClient, TorchDigitsOptions
from redfl.models.torch_adapter import load_arrays, to_arrays
from redfl.models.torch_cnn import DigitsCNN, TorchTrainer


def test_reading_a_state_dict_shares_memory_unless_asked_to_copy():
    model = DigitsCNN()
    views, copies = to_arrays(model), to_arrays(model, copy=True)
    assert list(views) == [
        "conv1.weight",
        "conv1.bias",
        "conv2.weight",
        "conv2.bias",
        "fc.weight",
        "fc.bias",
    ]
    assert views["fc.weight"].shape == (10, 256) and views["fc.weight"].dtype == np.float32
    with torch.no_grad():
        model.fc.weight.add_(1.0)
    np.testing.assert_array_equal(views["fc.weight"], model.fc.weight.detach().numpy())
    np.testing.assert_allclose(views["fc.weight"] - 1.0, copies["fc.weight"], atol=1e-6)
    assert not np.shares_memory(copies["fc.weight"], views["fc.weight"])


def test_loading_read_only_arrays_copies_them_in_without_warning_or_change():
    source = TorchTrainer.init_parameters(seed=7)
    for array in source.values():
        array.flags.writeable = False  # as Ray's object store hands them out
    model = DigitsCNN()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_arrays(model, source)
    for name, tensor in model.state_dict().items():
        np.testing.assert_array_equal(tensor.numpy(), source[name])
    with torch.no_grad():
        model.fc.bias.add_(1.0)  # training the model leaves the source alone
    assert not np.array_equal(model.fc.bias.detach().numpy(), source["fc.bias"])


def test_loading_wrong_names_or_shapes_says_which():
    model = DigitsCNN()
    arrays = to_arrays(model, copy=True)
    wrong_shape = dict(arrays, **{"fc.bias": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match=r"'fc.bias' has shape \(3,\), expected \(10,\)"):
        load_arrays(model, wrong_shape)
    renamed = {("head" if k == "fc.bias" else k): v for k, v in arrays.items()}
    with pytest.raises(KeyError, match=r"missing \['fc.bias'\], unexpected \['head'\]"):
        load_arrays(model, renamed)


def test_the_proximal_term_keeps_local_training_near_the_global_model():
    x, y = load_digits_arrays()
    x, y = x[:200], y[:200]
    start = TorchTrainer.init_parameters(seed=0)
    trainer = TorchTrainer(lr=0.2, epochs=3, batch_size=16)

    def drift(mu: float) -> float:
        new, _ = trainer.fit(DigitsCNN(), start, x, y, np.random.default_rng(0), mu)
        return float(np.sqrt(sum(((new[k] - start[k]) ** 2).sum() for k in start)))

    free, held = drift(0.0), drift(5.0)
    assert held < 0.8 * free
    # Same seed, no proximal term: the same model, so the comparison above is fair.
    assert drift(0.0) == free


def test_torch_clients_learn_digits_on_ray_as_in_process(ray_session):
    options = TorchDigitsOptions(partition="iid", epochs=1, lr=0.1, batch_size=16)
    x_test, y_test = load_digits_arrays()
    initial = TorchTrainer.init_parameters(seed=0)

    def run(runtime: str):
        fed = StarFederation(
            TorchDigitsClient,
            6,
            initial_parameters=initial,
            options=options.model_dump(),
            strategy=FedAvg(),
            resources=ResourcesConfig(num_workers=2, worker={"CPU": 0.5}),
            runtime=runtime,
            seed=0,
        )
        with fed:
            return fed.train(4).parameters

    on_ray, local = run("ray"), run("local")
    assert on_ray is not None and local is not None
    for name in initial:
        np.testing.assert_allclose(on_ray[name], local[name], rtol=0, atol=1e-6)
    _, before = TorchTrainer.evaluate(DigitsCNN(), initial, x_test, y_test)
    _, after = TorchTrainer.evaluate(DigitsCNN(), on_ray, x_test, y_test)
    assert before < 0.3 and after > 0.5
