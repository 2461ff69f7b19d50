"""A real chat-completions server on 127.0.0.1 whose behaviour the request's ``model`` picks, for the
gateway tests: ``python tests/upstream_server.py PORT EVENTS_FILE``.

- ``echo``: answers with the request it received (messages, token caps, Authorization, body keys, and the whole
  body as ``body``) as the message content, streamed as SSE when asked;
- ``GET /v1/models`` says its one model is ``owned_by: vllm`` (for ``--upstream-kind auto``);
- ``slow``: streams one chunk every 0.1 s for 60 s; when the client goes away it writes ``cancelled``
  to EVENTS_FILE;
- ``status-500`` / ``status-429``: that HTTP status (429 with ``Retry-After: 7``);
- ``hang``: never answers;
- ``cut``: a reply cut by the cap (finish_reason ``length``, as many tokens as the cap), unless the last message asks
  for the final answer (the gateway's graceful cut): then the echo, finished.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: the gateway's wrap-up line
from tale.serve.config import WRAP_UP  # noqa: E402

EVENTS = sys.argv[2] if len(sys.argv) > 2 else "/dev/null"


def completion(model: str, content: str) -> dict:
    return {"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}


def chunk(model: str, text: str) -> bytes:
    data = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return f"data: {json.dumps(data)}\n\n".encode()


async def chat(request: Request):
    body = await request.json()
    model = body.get("model", "echo")
    if model.startswith("status-"):
        status = int(model.removeprefix("status-"))
        headers = {"Retry-After": "7"} if status == 429 else {}
        return JSONResponse({"error": {"message": f"scripted {status}"}}, status_code=status, headers=headers)
    if model == "hang":
        await asyncio.sleep(3600)
    if model == "slow":
        async def slowly():
            try:
                for i in range(600):
                    yield chunk(model, f"{i} ")
                    await asyncio.sleep(0.1)
                yield b"data: [DONE]\n\n"
            finally:
                with open(EVENTS, "a") as events:
                    events.write("cancelled\n")

        return StreamingResponse(slowly(), media_type="text/event-stream")
    if model == "cut" and body["messages"][-1].get("content") != WRAP_UP:
        reply = completion(model, "Let me think: 6 times 7 is")
        reply["choices"][0]["finish_reason"] = "length"
        reply["usage"]["completion_tokens"] = cap = body.get("max_tokens") or body.get("max_completion_tokens") or 16
        reply["usage"]["total_tokens"] = 10 + cap
        return JSONResponse(reply)
    seen = json.dumps({"messages": body.get("messages"), "max_tokens": body.get("max_tokens"),
                       "max_completion_tokens": body.get("max_completion_tokens"),
                       "authorization": request.headers.get("authorization"), "keys": sorted(body), "body": body})
    if body.get("stream"):
        async def stream():
            for part in (seen[: len(seen) // 2], seen[len(seen) // 2:]):
                yield chunk(model, part)
            yield b"data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")
    return JSONResponse(completion(model, seen))


async def health(request: Request):
    return JSONResponse({"status": "ok"})


async def models(request: Request):
    return JSONResponse({"object": "list", "data": [{"id": "echo", "object": "model", "owned_by": "vllm"}]})


app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/v1/models", models), Route("/health", health)])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
