"""Device protocol models, the parameters codec, and device tokens."""

from __future__ import annotations

import base64

import jwt
import numpy as np
import pytest
from pydantic import ValidationError
from safetensors.numpy import save

from redfl.edge.protocol import (
    ResultRequest,
    Status,
    TaskReply,
    decode_arrays,
    encode_arrays,
)
from redfl.edge.tokens import TokenError, TokenSigner, bearer_token, secret_matches


def test_statuses() -> None:
    assert [s.value for s in Status] == [
        "OK",
        "RETRY",
        "DONE",
        "ERROR",
        "NO_JOB",
        "NO_TASK",
        "INVALID_REQUEST",
    ]


def test_codec_round_trip_and_size_of_a_10k_float_model() -> None:
    arrays = {"w": np.arange(10_000, dtype=np.float32).reshape(100, 100)}
    text = encode_arrays(arrays)
    raw = base64.b64decode(text)
    assert 40_000 < len(raw) < 40_200  # float32 data plus a small JSON header
    assert len(text) == 4 * ((len(raw) + 2) // 3)
    np.testing.assert_array_equal(decode_arrays(text)["w"], arrays["w"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not base64!", "base64 safetensors"),
        (base64.b64encode(b"junk").decode(), "base64 safetensors"),
        (base64.b64encode(save({"n": np.ones(2, np.int32)})).decode(), "must hold floats"),
        (encode_arrays({"w": np.array([1.0, np.nan])}), "NaN or infinite"),
    ],
)
def test_codec_refuses_bad_parameters(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_arrays(text)


def test_requests_refuse_unknown_fields_and_bad_names() -> None:
    ok = ResultRequest(job_id="j", task_id="lcp-1:b:1", parameters="AAAA")
    assert ok.num_samples == 1
    failed = ResultRequest(job_id="j", task_id="lcp-1:b:1", error="fit raised")
    assert failed.error == "fit raised"
    for both_or_neither in ({"parameters": "AAAA", "error": "x"}, {}):
        with pytest.raises(ValidationError, match=r"give parameters .the update. or error"):
            ResultRequest.model_validate({"job_id": "j", "task_id": "t", **both_or_neither})
    with pytest.raises(ValidationError, match="device_id"):
        ResultRequest.model_validate(
            {"job_id": "j", "task_id": "t", "parameters": "AAAA", "device_id": "other"}
        )
    with pytest.raises(ValidationError, match="job_id"):
        ResultRequest(job_id="bad id/../", task_id="t", parameters="AAAA")
    with pytest.raises(ValidationError, match="num_samples"):
        ResultRequest(job_id="j", task_id="t", parameters="AAAA", num_samples=0)


def test_reply_json_uses_status_strings() -> None:
    reply = TaskReply(status=Status.RETRY, retry_wait=0.5)
    assert '"status":"RETRY"' in reply.model_dump_json()


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_tokens_bind_the_device_and_expire() -> None:
    clock = Clock()
    signer = TokenSigner(b"s" * 32, ttl=10.0, clock=clock)
    token, expires = signer.issue("dev-1")
    assert expires == 1_010.0
    assert signer.verify(token) == "dev-1"
    claims = token.rpartition(".")[0]
    other, _ = signer.issue("dev-2")
    with pytest.raises(TokenError, match="bad signature"):  # dev-1's claims, dev-2's signature
        signer.verify(f"{claims}.{other.rpartition('.')[2]}")
    with pytest.raises(TokenError, match="bad signature"):
        TokenSigner(b"x" * 32, clock=clock).verify(token)
    with pytest.raises(TokenError, match="malformed token"):
        signer.verify("no-dot")
    unsigned = jwt.encode({"sub": "dev-1", "exp": 2_000.0}, key="", algorithm="none")
    with pytest.raises(TokenError, match="malformed token"):  # the "none" algorithm is refused
        signer.verify(unsigned)
    no_expiry = jwt.encode({"sub": "dev-1"}, b"s" * 32, algorithm="HS256")
    with pytest.raises(TokenError, match="malformed token"):
        signer.verify(no_expiry)
    clock.now = 1_009.9
    assert signer.verify(token) == "dev-1"  # remembered, still valid
    clock.now = 1_010.0
    with pytest.raises(TokenError, match="token expired"):  # remembered tokens expire too
        signer.verify(token)


def test_bearer_header_and_secret() -> None:
    assert bearer_token("Bearer abc.def") == "abc.def"
    for header in (None, "", "Basic abc", "Bearer "):
        with pytest.raises(TokenError, match="missing token"):
            bearer_token(header)
    assert secret_matches("s3cret", "s3cret") and not secret_matches("s3cret", "s3cre")
    with pytest.raises(ValueError, match="at least 32 bytes, got 16"):
        TokenSigner(b"a" * 16)
    with pytest.raises(ValueError, match="cache_size must be >= 1, got 0"):
        TokenSigner(b"a" * 32, cache_size=0)
