"""A served model's request handling without Ray: tokens, checks in order, 4xx reasons,
batched predictions that isolate a bad request."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import AsyncIterator

import jwt
import numpy as np
import pytest

from redfl.models.softmax import SoftmaxRegression
from redfl.nodes.predict import Predictor
from redfl.runtime.serving_requests import (
    Answer,
    BadRequest,
    ModelService,
    ServingSettings,
    body_limit,
    predict_batch,
    read_inputs,
)
from redfl.runtime.serving_tokens import TokenCheck, TokenError, TokenKey, bearer_token

NOW = 1_000_000.0


def softmax_predictor() -> tuple[Predictor, dict[str, np.ndarray]]:
    model = SoftmaxRegression(num_features=4, num_classes=3)
    rng = np.random.default_rng(0)
    parameters = {
        "weight": rng.normal(size=(4, 3)).astype(np.float32),
        "bias": rng.normal(size=3).astype(np.float32),
    }
    return Predictor(model.predict, model.input_shape, "softmax"), parameters


# tokens ---------------------------------------------------------------------------------


def test_a_token_verifies_to_its_id_until_it_expires() -> None:
    key = TokenKey.generate()
    issued = key.issue("digits", ttl=60.0, now=NOW)
    assert issued.expires_at == NOW + 60.0
    assert (
        TokenCheck(key.public_pem(), "digits", clock=lambda: NOW + 59.9).verify(issued.token)
        == issued.token_id
    )
    with pytest.raises(TokenError, match=r"^token expired$"):
        TokenCheck(key.public_pem(), "digits", clock=lambda: NOW + 60.0).verify(issued.token)


def test_forged_tampered_foreign_and_revoked_tokens_are_refused() -> None:
    key, other = TokenKey.generate(), TokenKey.generate()
    check = TokenCheck(key.public_pem(), "digits", clock=lambda: NOW)
    forged = other.issue("digits", ttl=60.0, now=NOW).token
    with pytest.raises(TokenError, match=r"^bad signature$"):
        check.verify(forged)
    good = key.issue("digits", ttl=60.0, now=NOW)
    header, payload, signature = good.token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["exp"] = NOW + 10**6  # extend it without the key
    longer = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(TokenError, match=r"^bad signature$"):
        check.verify(f"{header}.{longer}.{signature}")
    with pytest.raises(TokenError, match=r"^token for another deployment$"):
        check.verify(key.issue("torch", ttl=60.0, now=NOW).token)
    unsigned = jwt.encode(claims, "", algorithm="none")
    with pytest.raises(TokenError, match=r"^malformed token$"):
        check.verify(unsigned)
    for text in ("", "abc", "a.b.c"):
        with pytest.raises(TokenError, match=r"^malformed token$"):
            check.verify(text)
    check.revoked = frozenset([good.token_id])
    with pytest.raises(TokenError, match=r"^token revoked$"):
        check.verify(good.token)


def test_a_key_round_trips_through_pem_and_only_ed25519_keys_are_taken() -> None:
    key = TokenKey.generate()
    again = TokenKey.from_pem(key.to_pem())
    assert again.public_pem() == key.public_pem()
    assert key.to_pem().startswith(b"-----BEGIN PRIVATE KEY-----")
    with pytest.raises(ValueError):
        TokenKey.from_pem(b"not a key")
    with pytest.raises(ValueError, match="ttl must be > 0"):
        key.issue("digits", ttl=0.0)


def test_bearer_header_parsing() -> None:
    assert bearer_token("Bearer abc ") == "abc"
    assert bearer_token("bearer abc") == "abc"
    for header in (None, "", "Basic abc", "Bearer", "Bearer  "):
        with pytest.raises(TokenError, match=r"^missing token"):
            bearer_token(header)


# inputs ---------------------------------------------------------------------------------


def test_inputs_become_rows_of_the_declared_shape() -> None:
    array = read_inputs(b'{"inputs": [[1, 2.5, -3e-2, 4], [0, 0, 0, 0]]}', 10, (4,))
    assert array.dtype == np.float64 and array.shape == (2, 4)
    assert array[0].tolist() == [1.0, 2.5, -0.03, 4.0]
    assert read_inputs(b'{"inputs": [[1, 2, 3, 4]]}', 10, (2, 2)).shape == (1, 2, 2)
    assert read_inputs(b'{"inputs": [[1, 2, 3]]}', 10, None).shape == (1, 3)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"nope", "body: Invalid JSON: expected ident at line 1 column 2"),
        (b"[[1, 2, 3, 4]]", "body: Input should be an object"),
        (b"{}", "body.inputs: Field required"),
        (b'{"inputs": [[1, 2, 3, 4]], "labels": [1]}', "body.labels: unknown key"),
        (b'{"inputs": []}', "body.inputs: needs at least one row"),
        (b'{"inputs": [1, 2, 3, 4]}', "body.inputs.0: Input should be a valid array (got 1)"),
        (
            b'{"inputs": [[1, true, "3", 4]]}',
            "body.inputs.0.1: Input should be a valid number (got True); "
            "body.inputs.0.2: Input should be a valid number (got '3')",
        ),
        (b'{"inputs": [[1, 2, NaN, 4]]}', "body.inputs.0.2: Input should be a finite number"),
        (b'{"inputs": [[1, 2, 1e400, 4]]}', "body.inputs.0.2: Input should be a finite number"),
        (
            b'{"inputs": [[1, 2, 3, 4], [1, 2, 3]]}',
            "body.inputs.1: a row must hold 4 numbers (an example of shape (4,), flattened), got 3",
        ),
        (
            b'{"inputs": [[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4]]}',
            "body.inputs: at most 2 rows per request, got 3",
        ),
    ],
)
def test_bad_inputs_are_422_naming_the_problem(body: bytes, message: str) -> None:
    with pytest.raises(BadRequest) as caught:
        read_inputs(body, 2, (4,))
    assert caught.value.status == 422
    assert caught.value.message.startswith(message), caught.value.message


def test_many_bad_values_name_the_first_three_and_count_the_rest() -> None:
    body = json.dumps({"inputs": [["x"] * 4] * 2}).encode()
    with pytest.raises(BadRequest) as caught:
        read_inputs(body, 2, (4,))
    parts = caught.value.message.split("; ")
    assert parts[:3] == [
        "body.inputs.0.0: Input should be a valid number (got 'x')",
        "body.inputs.0.1: Input should be a valid number (got 'x')",
        "body.inputs.0.2: Input should be a valid number (got 'x')",
    ]
    assert parts[3] == "and 5 more"


def test_rows_of_unknown_width_must_agree() -> None:
    with pytest.raises(
        BadRequest, match=re.escape("body.inputs.1: a row must hold 2 numbers, got 1")
    ):
        read_inputs(b'{"inputs": [[1, 2], [3]]}', 10, None)
    with pytest.raises(
        BadRequest, match=re.escape("body.inputs.0: a row must hold at least one numbers")
    ):
        read_inputs(b'{"inputs": [[]]}', 10, None)


def test_the_body_limit_fits_max_rows_of_long_numbers() -> None:
    rows = [[-1.2345678901234567e-300] * 64] * 1024
    text = json.dumps({"inputs": rows}).encode()
    assert len(text) <= body_limit(1024, (64,))
    assert body_limit(1, (64,)) == 1 << 20
    assert body_limit(10**6, (10**4,)) == 1 << 30


# batches --------------------------------------------------------------------------------


def test_a_batch_answers_each_request_with_its_own_rows() -> None:
    predictor, parameters = softmax_predictor()
    rng = np.random.default_rng(1)
    batch = [rng.normal(size=(n, 4)) for n in (1, 3, 2)]
    answers = predict_batch(predictor, parameters, batch)
    assert [a.status for a in answers] == [200, 200, 200]
    for answer, rows in zip(answers, batch, strict=True):
        expected = predictor(parameters, rows)
        np.testing.assert_allclose(answer.outputs(), expected, rtol=1e-6)
        assert answer.outputs().shape == (len(rows), 3)


def test_a_request_the_model_refuses_fails_alone() -> None:
    def picky(parameters: dict[str, np.ndarray], inputs: np.ndarray) -> np.ndarray:
        if (inputs < 0).any():
            raise ValueError("negative pixel values")
        if (inputs > 100).any():
            raise ZeroDivisionError("the model's own bug")
        summed: np.ndarray = inputs.sum(axis=1, keepdims=True)
        return summed

    predictor = Predictor(picky, (2,), "tests:Picky")
    batch = [np.array([[1.0, 2.0]]), np.array([[-1.0, 0.0]]), np.array([[101.0, 0]])]
    answers = predict_batch(predictor, {}, batch)
    assert answers[0].status == 200 and answers[0].outputs().tolist() == [[3.0]]
    assert answers[1].status == 422
    assert json.loads(answers[1].body) == {"detail": "body.inputs: negative pixel values"}
    assert answers[2].status == 500
    assert json.loads(answers[2].body) == {
        "detail": "the model failed: ZeroDivisionError: the model's own bug"
    }
    with pytest.raises(ValueError, match=r"^422: body.inputs: negative pixel values$"):
        answers[1].outputs()
    with pytest.raises(RuntimeError, match=r"^500: the model failed"):
        answers[2].outputs()


def test_outputs_that_are_not_finite_numbers_or_one_row_per_input_are_500() -> None:
    cases = [
        (lambda p, x: np.full((len(x), 1), np.nan), "tests:M.predict returned NaN or infinity"),
        (lambda p, x: np.array(["a"] * len(x)), "tests:M.predict returned <U1 values, not"),
        (lambda p, x: np.zeros(len(x) + 1), "the model failed: TypeError: tests:M.predict "),
    ]
    for predict, message in cases:
        answer = predict_batch(Predictor(predict, None, "tests:M"), {}, [np.zeros((2, 2))])[0]
        assert answer.status == 500
        assert json.loads(answer.body)["detail"].startswith(message)


# the service: checks in order -----------------------------------------------------------


class Body:
    """A request body read in chunks; records whether anyone read it."""

    def __init__(self, data: bytes, chunk: int = 1000) -> None:
        self.chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]
        self.read = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.read = True
        for chunk in self.chunks:
            yield chunk


def service_and_token() -> tuple[ModelService, str, dict[str, np.ndarray], list[np.ndarray]]:
    predictor, parameters = softmax_predictor()
    service = ModelService("digits", predictor, parameters, {"run": "r1"}, replica="rep-1")
    key = TokenKey.generate()
    service.configure(ServingSettings(max_rows=4, max_body_bytes=2048, public_key=key.public_pem()))
    seen: list[np.ndarray] = []
    return service, key.issue("digits", ttl=60.0).token, parameters, seen


def call(
    service: ModelService,
    method: str,
    route: str,
    headers: dict[str, str],
    body: Body,
    parameters: dict[str, np.ndarray],
    seen: list[np.ndarray],
) -> Answer:
    async def predict(rows: np.ndarray) -> Answer:
        seen.append(rows)
        return service.predict([rows])[0]

    return asyncio.run(service.answer_http(method, route, headers, body, predict))


def test_the_caller_is_checked_before_the_route_and_the_body() -> None:
    service, _, parameters, seen = service_and_token()
    body = Body(b'{"inputs": [[1, 2, 3, 4]]}')
    for headers, reason in (
        ({}, "missing token: send 'Authorization: Bearer <token>'"),
        ({"authorization": "Bearer x.y.z"}, "malformed token"),
    ):
        for route in ("/predict", "/health", "/nowhere"):
            answer = call(service, "POST", route, headers, body, parameters, seen)
            assert answer.status == 401 and json.loads(answer.body) == {"detail": reason}
            assert dict(answer.headers)["www-authenticate"].startswith('Bearer error="invalid')
    assert not body.read and not seen


def test_routes_methods_health_and_a_prediction() -> None:
    service, token, parameters, seen = service_and_token()
    auth = {"authorization": f"Bearer {token}"}
    body = b'{"inputs": [[1, 2, 3, 4]]}'
    missing = call(service, "GET", "/nowhere", auth, Body(body), parameters, seen)
    assert (missing.status, json.loads(missing.body)["detail"]) == (
        404,
        "no route /nowhere: POST /predict, GET /health",
    )
    wrong = call(service, "GET", "/predict", auth, Body(body), parameters, seen)
    assert wrong.status == 405 and dict(wrong.headers) == {"allow": "POST"}
    health = call(service, "GET", "/health", auth, Body(b""), parameters, seen)
    assert json.loads(health.body) == {
        "status": "ok",
        "name": "digits",
        "replica": "rep-1",
        "run": "r1",
        "input_shape": [4],
        "max_rows": 4,
        "max_batch": 16,
        "requests": 0,
        "batches": 0,
    }
    answer = call(service, "POST", "/predict", auth, Body(body), parameters, seen)
    assert answer.status == 200
    expected = service.predictor(parameters, np.array([[1.0, 2, 3, 4]]))
    np.testing.assert_array_equal(answer.outputs(), expected)


def test_the_body_size_is_checked_before_it_is_read() -> None:
    service, token, parameters, seen = service_and_token()
    auth = {"authorization": f"Bearer {token}"}
    big = Body(b" " * 5000)
    answer = call(
        service, "POST", "/predict", {**auth, "content-length": "5000"}, big, parameters, seen
    )
    assert answer.status == 413 and not big.read
    assert json.loads(answer.body)["detail"] == "body: at most 2048 bytes per request, got 5000"
    unsaid = Body(b" " * 5000)  # no Content-Length: read until the limit
    answer = call(service, "POST", "/predict", auth, unsaid, parameters, seen)
    assert answer.status == 413
    assert (
        json.loads(answer.body)["detail"]
        == "body: at most 2048 bytes per request, got at least 3000"
    )
    lying = call(
        service, "POST", "/predict", {**auth, "content-length": "-1"}, Body(b"{}"), parameters, seen
    )
    assert lying.status == 400
    assert not seen


def test_a_422_reaches_no_model_and_the_service_answers_on() -> None:
    service, token, parameters, seen = service_and_token()
    auth = {"authorization": f"Bearer {token}"}
    rows = json.dumps({"inputs": [[0.0] * 4] * 5}).encode()
    answer = call(service, "POST", "/predict", auth, Body(rows), parameters, seen)
    assert answer.status == 422
    assert json.loads(answer.body)["detail"] == "body.inputs: at most 4 rows per request, got 5"
    assert not seen
    ok = call(
        service, "POST", "/predict", auth, Body(b'{"inputs": [[0, 0, 0, 0]]}'), parameters, seen
    )
    assert ok.status == 200 and len(seen) == 1


def test_new_settings_revoke_at_once_and_no_key_refuses_every_request() -> None:
    service, token, _, _ = service_and_token()
    token_id = service.caller(f"Bearer {token}")
    service.configure(service.settings.model_copy(update={"revoked": (token_id,)}))
    with pytest.raises(TokenError, match=r"^token revoked$"):
        service.caller(f"Bearer {token}")
    service.configure(ServingSettings(public_key=None))
    with pytest.raises(TokenError, match="takes no tokens"):
        service.caller(f"Bearer {token}")


def test_the_handle_path_checks_size_and_inputs_without_a_token() -> None:
    service, _, _, seen = service_and_token()

    async def predict(rows: np.ndarray) -> Answer:
        seen.append(rows)
        return service.predict([rows])[0]

    big = asyncio.run(service.answer_body(b" " * 3000, predict))
    assert big.status == 413
    bad = asyncio.run(service.answer_body(b'{"inputs": [[1]]}', predict))
    assert bad.status == 422
    good = asyncio.run(service.answer_body(b'{"inputs": [[1, 1, 1, 1]]}', predict))
    assert good.status == 200 and len(seen) == 1
