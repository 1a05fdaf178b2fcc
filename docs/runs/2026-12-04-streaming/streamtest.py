"""Does per-token streaming slow clara-serve's model thread at 8 clients? (#14, session 21)

    .venv/bin/python docs/runs/2026-12-04-streaming/streamtest.py [ROUNDS] [clara-serve args]

One clara-serve on bench_server.py's index; rounds of 8 closed-loop clients sending 16
requests streamed, then 16 not streamed; prints the model thread's milliseconds per request
in each (its /metrics). On the 2-core AMD EPYC, 4 rounds (2026-12-04): 254-314 ms streamed,
266-290 ms not, no consistent difference.
"""

import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
import clara  # noqa: E402, F401  # isort: skip  (first: the BLAS path before mlx loads)
import bench_server as bs  # noqa: E402
import httpx  # noqa: E402


async def nonstream_level(url, bodies, conc):
    todo = list(bodies)
    n = 0

    async def loop(client):
        nonlocal n
        while todo:
            b = {**todo.pop(0), "stream": False}
            b.pop("stream_options", None)
            r = await client.post(url, json=b)
            r.raise_for_status()
            n += 1

    async with httpx.AsyncClient(timeout=600) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(loop(c) for _ in range(conc)))
        return {"requests": n, "wall": time.perf_counter() - t0}


tmp = Path(tempfile.mkdtemp())
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 4
per = 16
questions, retrieved = bs.build_index(tmp / "index", tmp / "docs", 24, rounds * per * 2 + 8, 5)
port = bs.free_port()
cmd, health = bs.server_command("clara memory", port, tmp / "index", None, None, None)
proc = bs.start(cmd + sys.argv[2:], health, tmp / "log")
try:
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    bodies = bs.bodies_for("clara memory", questions, retrieved, 32, 5)
    asyncio.run(bs.level(url, bodies[:8], 8))
    used = 8
    for r in range(rounds):
        for mode in ("stream", "plain"):
            b = bodies[used : used + per]
            used += per
            before = bs.model_seconds(port)
            res = asyncio.run(
                bs.level(url, b, 8) if mode == "stream" else nonstream_level(url, b, 8)
            )
            after = bs.model_seconds(port)
            ph = bs.phases(before, after, res)
            print(
                f"round {r} {mode:6s} wall {res['wall']:.2f}s  enc {ph['query_encode_s'] * 1e3:.0f} "
                f"prefill {ph['prefill_s'] * 1e3:.0f} decode {ph['decode_step_s'] * 1e3:.0f} "
                f"model {ph['model_s'] * 1e3:.0f} ms/req busy {ph['busy']:.2f}",
                flush=True,
            )
finally:
    bs.stop(proc)
