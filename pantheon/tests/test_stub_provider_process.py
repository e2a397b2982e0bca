"""The benchmarks' stub provider process (`pantheon.testing.scratch.stub_provider_process`):
it listens before the benchmark starts, and a port it cannot take stops the benchmark."""

import socket

import httpx
import pytest

from pantheon.testing.scratch import stub_provider_process
from pantheon.testing.servers import free_port


def test_a_port_another_process_holds_stops_the_benchmark():
    """The stub could not bind and exited, and the benchmark measured against the old listener
    (an earlier run's stub, still stopping), printing its figures as if nothing were wrong."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]

        with pytest.raises(SystemExit) as stopped, stub_provider_process(port):
            pytest.fail("the block ran against another process's listener")

    assert str(stopped.value) == (
        f"the stub provider cannot listen on 127.0.0.1:{port} (Address already in use): "
        "another process holds the port; wait for it, or choose another --port-base"
    )


def test_the_stub_answers_as_soon_as_the_block_starts_and_is_gone_after_it():
    port = free_port()

    with stub_provider_process(port) as url:
        answer = httpx.post(
            f"{url}/chat/completions",
            json={"model": "fast", "messages": [{"role": "user", "content": "hello"}]},
            timeout=10,
        )

    assert url == f"http://127.0.0.1:{port}/v1"
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["role"] == "assistant"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), 1).close()
