"""The delivery core: WebSocket connections, the process's channel-layer subscription and the server adapters."""
