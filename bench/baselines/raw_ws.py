#!/usr/bin/env python3
"""Baseline for bench/run.py only. Reference limit: a bare asyncio `websockets` room broadcaster
(no framework, no DB, no broker). Speaks the 'tutorial' protocol: path /ws/chat/<room>/,
frames {"message": ...} echoed to the room."""
import asyncio, sys
import websockets

rooms = {}

async def handler(ws):
    room = ws.request.path
    members = rooms.setdefault(room, set())
    members.add(ws)
    try:
        async for data in ws:
            websockets.broadcast(members, data)
    finally:
        members.discard(ws)

async def main(port):
    async with websockets.serve(handler, "127.0.0.1", port, ping_interval=None, compression=None):
        await asyncio.Future()

if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8002))
