"""The served-policy client (`model/backend=openai`) against a small HTTP server on 127.0.0.1 that answers as an
OpenAI-compatible server would, including its failures: retries with backoff on 5xx and dropped connections, a clear
error on 4xx, round-robin over several URLs, the stop string kept, finish reasons as in-process vLLM's.

The real thing (`vllm serve`, greedy outputs equal to the in-process vLLM backend, beam search end to end) is in
tests/test_vllm_served.py, run by scripts/vllm_cpu_lane.sh.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytest.importorskip("openai")
pytest.importorskip("transformers")

from tests.tiny_models import tiny_dirs  # noqa: E402
from tts.backends import GenerationRequest, build_policy  # noqa: E402
from tts.backends.base import PolicyUnavailable  # noqa: E402
from tts.backends.hf import encode_prompt, render_prompt  # noqa: E402
from tts.backends.openai import OpenAIPolicyConfig  # noqa: E402
from tts.config.schema import ConfigError, ModelConfig  # noqa: E402
from tts.config.validate import validate  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MESSAGES = [{"role": "user", "content": "What is 1+2?"}]


class Server:
    """A completions endpoint whose answers the test scripts: `plan` is a list of (status, body) popped per request
    (an empty plan answers a default completion); `seen` records every request body."""

    def __init__(self) -> None:
        self.plan: list[tuple[int, dict | None]] = []
        self.seen: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.seen.append(body)
                status, answer = owner.plan.pop(0) if owner.plan else (200, None)
                if status == 0:  # drop the connection without an answer
                    self.close_connection = True
                    return
                if answer is None:
                    answer = completion([choice(i, "x = 3\n\n", "stop", "\n\n", [11, 12, 13]) for i in range(body["n"])])
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def choice(index: int, text: str, finish: str, stop_reason, token_ids=None) -> dict:
    out = {"index": index, "text": text, "finish_reason": finish, "stop_reason": stop_reason, "logprobs": None}
    if token_ids is not None:
        out["token_ids"] = token_ids
    return out


def completion(choices: list[dict]) -> dict:
    return {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": "tiny", "choices": choices,
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    return tiny_dirs(tmp_path_factory)


@pytest.fixture
def servers():
    made = [Server(), Server()]
    yield made
    for server in made:
        server.close()


def _policy(dirs, urls, **overrides):
    backend = OpenAIPolicyConfig(_target_="tts.backends.openai.build", base_url=urls, **{"max_retries": 2, **overrides})
    return build_policy(ModelConfig(name="tiny", backend=backend, path=str(dirs["llama"]), chat_template="llama3"),
                        seed=0)


def test_requests_carry_the_raw_prompt_and_sampling_and_answers_map_as_vllm(dirs, servers):
    policy = _policy(dirs, servers[0].url)
    try:
        request = GenerationRequest(MESSAGES, prefix="## Step 1: add\n\n", n=3, temperature=0.7, top_p=0.9,
                                    max_tokens=9, stop=["\n\n"], seed=5)
        servers[0].plan = [(200, completion([
            choice(0, "1 + 2 = 3\n\n", "stop", "\n\n", [1, 2, 3, 4]),
            choice(1, "so 3", "stop", None, [5, 6]),                   # EOS
            choice(2, "1 + 2 is", "length", None, [7, 8, 9, 10, 11, 12, 13, 14, 15]),
        ]))]
        [outs] = policy.generate([request])
        [body] = servers[0].seen
        # the prompt is our chat template + the partial answer, as token ids (one BOS, trailing blank line kept)
        assert body["prompt"] == encode_prompt(policy.tokenizer, render_prompt(policy.tokenizer, request))
        assert {k: body[k] for k in ("n", "temperature", "top_p", "max_tokens", "stop", "seed")} == dict(
            n=3, temperature=0.7, top_p=0.9, max_tokens=9, stop=["\n\n"], seed=5)
        assert body["include_stop_str_in_output"] is True and body["model"] == str(dirs["llama"])
        assert [(o.text, o.finish_reason, o.num_tokens) for o in outs] == [
            ("1 + 2 = 3\n\n", "stop", 4), ("so 3", "eos", 2), ("1 + 2 is", "length", 9)]
        assert policy.stats.samples == 3 and policy.stats.generated_tokens == 15
    finally:
        policy.close()


def test_a_stripped_stop_string_is_put_back(dirs, servers):
    policy = _policy(dirs, servers[0].url)
    try:
        servers[0].plan = [(200, completion([choice(0, "x = 3", "stop", "\n\n", [1, 2])]))]
        [[out]] = policy.generate([GenerationRequest(MESSAGES, stop=["\n\n"])])
        assert (out.text, out.finish_reason) == ("x = 3\n\n", "stop")
    finally:
        policy.close()


def test_round_robin_over_urls_with_many_requests_in_flight(dirs, servers):
    policy = _policy(dirs, [s.url for s in servers], max_concurrency=4)
    try:
        outputs = policy.generate([GenerationRequest(MESSAGES, n=2, seed=i) for i in range(6)])
        assert [len(o) for o in outputs] == [2] * 6
        assert sorted(b["seed"] for b in servers[0].seen) == [0, 2, 4]
        assert sorted(b["seed"] for b in servers[1].seen) == [1, 3, 5]
    finally:
        policy.close()


def test_5xx_and_dropped_connections_are_retried(dirs, servers):
    policy = _policy(dirs, servers[0].url)
    try:
        servers[0].plan = [(503, {"error": {"message": "busy"}}), (0, None)]
        [[out]] = policy.generate([GenerationRequest(MESSAGES, stop=["\n\n"])])
        assert out.text == "x = 3\n\n" and len(servers[0].seen) == 3
    finally:
        policy.close()


def test_4xx_is_a_clear_error_without_retries(dirs, servers):
    policy = _policy(dirs, servers[0].url)
    try:
        servers[0].plan = [(400, {"error": {"message": "max_tokens is too large"}})]
        with pytest.raises(RuntimeError, match=r"answered HTTP 400: max_tokens is too large"):
            policy.generate([GenerationRequest(MESSAGES)])
        assert len(servers[0].seen) == 1
    finally:
        policy.close()


def test_an_unreachable_server_is_a_clear_error(dirs, servers):
    url = servers[1].url
    servers[1].close()
    policy = _policy(dirs, url, max_retries=0)
    try:
        with pytest.raises(RuntimeError, match=r"could not reach the served policy at http://127\.0\.0\.1"):
            policy.generate([GenerationRequest(MESSAGES)])
    finally:
        policy.close()
    servers.pop()


def test_a_server_that_does_not_say_which_stop_is_refused(dirs, servers):
    policy = _policy(dirs, servers[0].url)
    try:
        plain = {"index": 0, "text": "x = 3", "finish_reason": "stop", "logprobs": None}
        servers[0].plan = [(200, completion([plain]))]
        with pytest.raises(RuntimeError, match="cannot be told apart"):
            policy.generate([GenerationRequest(MESSAGES, stop=["\n\n"])])
    finally:
        policy.close()


@pytest.mark.parametrize("value", [None, "localhost:8000", [], ["http://ok/v1", 3]])
def test_base_url_is_checked_before_anything_runs(make_cfg, value):
    cfg = make_cfg(["model=llama-3.2-1b", "model/backend=openai"])
    cfg.model.backend.base_url = value
    with pytest.raises(ConfigError, match="config key 'model.backend.base_url'"):
        validate(cfg)


class DripServer:
    """A real socket server that answers 200 with a long body it sends one byte at a time: every read gets a byte
    before httpx's per-read timeout, so only a deadline on the whole request stops it."""

    def __init__(self, interval: float = 0.1) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.interval = interval
        self.connections = 0
        self.stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn) -> None:
        try:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
            for _ in range(int(30 / self.interval)):  # 30 s: a client without a deadline fails this test, not hangs
                if self.stopped.is_set():
                    break
                conn.sendall(b" ")
                time.sleep(self.interval)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()


def test_request_timeout_is_a_deadline_for_the_whole_request_against_a_slow_drip(dirs):
    server = DripServer()
    deadline = 1.5
    policy = _policy(dirs, server.url, request_timeout=deadline, max_retries=3)
    try:
        started = time.monotonic()
        with pytest.raises(PolicyUnavailable, match=r"did not finish a request within model\.backend\.request_timeout=1\.5 s") as info:
            policy.generate([GenerationRequest(MESSAGES)])
        elapsed = time.monotonic() - started
        # the drip never stops: without the deadline the request would hang until the server gives up (never)
        assert elapsed < deadline + 10, f"gave up only after {elapsed:.1f} s"
        assert server.url in str(info.value) and "\n" not in str(info.value)
    finally:
        policy.close()
        server.close()


def test_a_malformed_reply_names_the_url_and_shows_its_first_bytes(dirs):
    class Garbage(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers["Content-Length"]))
            data = b"<html>502 Bad Gateway from the proxy</html>"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    policy = _policy(dirs, url)
    try:
        with pytest.raises(PolicyUnavailable, match=r"sent a reply that is not a completion") as info:
            policy.generate([GenerationRequest(MESSAGES)])
        assert url in str(info.value) and "<html>502 Bad Gateway" in str(info.value)
    finally:
        policy.close()
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("failure", ["refused", "http_404"])
def test_a_run_against_a_failing_server_ends_in_one_line(dirs, servers, tmp_path, failure):
    """The whole program, not the client: a refused connection or an HTTP error is one line on stderr naming the URL
    and what to do, exit status 1, no traceback."""
    if failure == "refused":
        url = servers[1].url
        servers[1].close()
        servers.pop()
    else:
        url = servers[0].url
        servers[0].plan = [(404, {"error": {"message": "The model `tiny` does not exist."}})] * 8
    args = [sys.executable, "tts/main.py", "model=llama-3.2-1b", "model/backend=openai", f"model.path={dirs['llama']}",
            "model.chat_template=llama3", f"model.backend.base_url={url}", "model.backend.max_retries=0",
            "dataset.num_problems=2", "logger=none", "budget.max_tokens=8", f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len(errors) == 1 and url in errors[0], proc.stderr[-2000:]
    assert ("is the server up" in errors[0]) if failure == "refused" else ("HTTP 404" in errors[0])
