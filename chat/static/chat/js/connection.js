/* The WebSocket connection: connect, dispatch each server frame to its handler, reconnect.
 *
 * Reconnects after any close but the final ones, with exponential backoff capped at 10 s and
 * jitter (a restarted server is not met by every client at once), a visible countdown and
 * "Retry now". Unknown frame types are ignored so that an older page survives a newer server.
 */
import {fmt} from "./util.js";

const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 10000;
export const FINAL_CLOSES = [4403, 4404, 4410];

export function backoff(attempt) {
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** attempt);
  return ceiling / 2 + Math.random() * ceiling / 2;
}

export class Connection {
  /* handlers: frame type -> function(frame); onStatus(state, secondsLeft); onFinal(code, reason). */
  constructor({path, loginUrl, handlers, onStatus, onFinal}) {
    Object.assign(this, {path, loginUrl, handlers, onStatus, onFinal});
    this.socket = null;
    this.attempts = 0;
    this.stopped = false;
    this.retryAt = 0;
    this.retryTimer = null;
    this.tickTimer = null;
  }

  get open() {
    return this.socket !== null && this.socket.readyState === WebSocket.OPEN;
  }

  connect() {
    this.clearTimers();
    if (this.stopped) return;
    this.onStatus("connecting");
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}${this.path}`);
    this.socket = socket;
    socket.addEventListener("message", (event) => this.dispatch(event.data));
    socket.addEventListener("close", (event) => this.closed(socket, event));
  }

  /* The server answered hello: the next failure starts the backoff afresh. */
  established() {
    this.attempts = 0;
    this.onStatus("online");
  }

  send(frame) {
    if (!this.open) return false;
    this.socket.send(JSON.stringify(frame));
    return true;
  }

  dispatch(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    const handler = frame && this.handlers[frame.type];
    if (handler) handler(frame);
  }

  closed(socket, event) {
    if (socket !== this.socket || this.stopped) return;
    if (event.code === 4401) {
      location.assign(this.loginUrl);
      return;
    }
    if (FINAL_CLOSES.includes(event.code)) {
      this.stop();
      this.onFinal(event.code, event.reason);
      return;
    }
    const delay = backoff(this.attempts++);
    this.retryAt = Date.now() + delay;
    this.retryTimer = setTimeout(() => this.connect(), delay);
    this.tick();
    this.tickTimer = setInterval(() => this.tick(), 1000);
  }

  tick() {
    this.onStatus("offline", Math.max(0, Math.ceil((this.retryAt - Date.now()) / 1000)));
  }

  /* "Retry now", or the browser says the network is back: don't wait out the backoff. */
  retryNow() {
    if (this.retryTimer !== null && !this.stopped) this.connect();
  }

  clearTimers() {
    clearTimeout(this.retryTimer);
    clearInterval(this.tickTimer);
    this.retryTimer = this.tickTimer = null;
  }

  stop() {
    this.stopped = true;
    this.clearTimers();
    if (this.socket && this.socket.readyState <= WebSocket.OPEN) this.socket.close(1000);
    this.onStatus("stopped");
  }
}

/* The connection status line ("online", "offline"), announced once per change, and beside it a
 * countdown to the next attempt with a Retry now button, outside the live region. */
export function statusView(stateElement, retryButton, countdown) {
  let last = null;
  return (state, seconds) => {
    document.body.classList.toggle("conn-down", state !== "online");
    if (retryButton) retryButton.hidden = state !== "offline";
    if (countdown) {
      countdown.hidden = state !== "offline";
      countdown.textContent = state === "offline"
        ? fmt(ngettext("retrying in %(seconds)s s", "retrying in %(seconds)s s", seconds), {seconds}) : "";
    }
    if (!stateElement || state === last) return;
    last = state;
    const labels = {connecting: gettext("connecting…"), online: gettext("online"),
                    stopped: gettext("disconnected"), offline: gettext("offline")};
    stateElement.className = `conn ${state === "stopped" ? "offline" : state}`;
    stateElement.textContent = labels[state];
  };
}
