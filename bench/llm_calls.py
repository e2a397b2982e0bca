"""CPU per LLM call in this process: the gateway (`LiteLLMGateway`, litellm as the server uses
it) calling the stub provider (`pantheon.testing.stub_llm`, in a process of its own, at 0 ms),
plain and streamed, with no Django around it: what a turn pays for its call to litellm.

    python bench/llm_calls.py [--calls 2000] [--port 8830] [--messages 12] [--stream]
                              [--concurrency 8] [--profile FILE.pstats] [--rounds 3]

It warms up (the gateway's `warm_up`, then a few hundred calls), then makes `--calls` calls,
`--concurrency` at a time, and prints the process's CPU per call (user + system), each round
and their median. The figures move with the machine's load: compare two checkouts with it in
turns (A, B, A, B), or the server's CPU with `bench/cpu_ab.py`. `--profile` writes a cProfile
of the measured calls (cProfile slows them: read its split, not its times).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestration.gateway import LiteLLMGateway  # noqa: E402
from orchestration.types import AliasConfig, CallPurpose, ChatMessage, LlmCall, Role  # noqa: E402
from pantheon.testing.scratch import stub_provider_process  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--port", type=int, default=8830, help="the stub's")
    parser.add_argument("--messages", type=int, default=12, help="messages in each prompt")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--profile", type=Path, help="write a cProfile of the measured calls")
    return parser.parse_args()


def a_call(stub_url: str, messages: int) -> LlmCall:
    alias = AliasConfig(
        alias="stub_fast",
        litellm_model="openai/slow-0",
        api_base=stub_url,
        api_key="stub-key",
        context_window=32768,
        max_output_tokens=1024,
    )
    said = [ChatMessage(Role.SYSTEM, "You are Fast, an agent of the room. " * 20)]
    for index in range(messages - 1):
        role = Role.USER if index % 2 == 0 else Role.ASSISTANT
        said.append(ChatMessage(role, f"Message {index}: " + "some words of a chat " * 15))
    return LlmCall(alias=alias, messages=tuple(said), purpose=CallPurpose.AGENT, agent_key="fast")


async def calls(gateway: LiteLLMGateway, call: LlmCall, total: int, every: int, stream: bool):
    left = total

    async def client() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            if stream:
                result = await gateway.stream(call, lambda piece: None)
            else:
                result = await gateway.complete(call)
            if not result.ok:
                raise RuntimeError(f"a call failed: {result.error_kind} {result.error_message}")

    await asyncio.gather(*(client() for _ in range(every)))


def main() -> None:
    args = parse_args()
    with stub_provider_process(args.port) as stub_url:
        gateway = LiteLLMGateway(timeout_seconds=30, max_retries=0)
        gateway.warm_up()
        call = a_call(stub_url, args.messages)
        time.sleep(1)  # the stub starting

        async def run() -> None:
            for attempt in range(50):
                try:
                    await calls(gateway, call, 300, args.concurrency, args.stream)
                    break
                except RuntimeError:
                    if attempt == 49:
                        raise
                    await asyncio.sleep(0.2)
            figures = []
            profile = cProfile.Profile() if args.profile else None
            for index in range(args.rounds):
                before = os.times()
                if profile is not None:
                    profile.enable()
                await calls(gateway, call, args.calls, args.concurrency, args.stream)
                if profile is not None:
                    profile.disable()
                after = os.times()
                used = (after.user - before.user) + (after.system - before.system)
                figures.append(used * 1000 / args.calls)
                print(f"round {index + 1}: {figures[-1]:.3f} ms CPU per call", flush=True)
            print(f"median: {statistics.median(figures):.3f} ms CPU per call")
            if profile is not None:
                profile.dump_stats(args.profile)

        asyncio.run(run())


if __name__ == "__main__":
    main()
