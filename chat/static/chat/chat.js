/* The browser client of one room page.
 *
 * It speaks the wire contract (PROTOCOL.md) over one WebSocket at /ws/chat/, authenticated
 * by the session cookie, and pages history over REST. Server frames go through `handlers`,
 * one entry per server frame type, mirroring chat/protocol.py; unknown types are ignored so
 * an older page survives a newer server. Message text is only ever set with textContent.
 */
"use strict";

(function () {
  const config = JSON.parse(document.getElementById("chat-config").textContent);
  const ROOM = config.room;
  const ME = config.user.username;
  const TYPING_EVERY_MS = 2000;   // the server relays at most one typing frame per 2 s anyway
  const TYPING_SHOWN_MS = 3000;
  const BACKOFF_BASE_MS = 500;
  const BACKOFF_MAX_MS = 30000;
  const GAP_PAGE = 200;
  const FINAL_CLOSES = {
    4403: "You no longer have access to this room.",
    4404: "This room does not exist.",
    4410: "This room has been archived.",
  };
  const LEFT_REASONS = {
    left: "You left this room.",
    kicked: "You were removed from this room.",
    banned: "You are banned from this room.",
    gone: "You are no longer a member of this room.",
  };

  const $ = (id) => document.getElementById(id);
  const ui = {
    list: $("messages"), pending: $("pending"), scroller: $("scroller"), older: $("load-older"),
    composer: $("composer"), body: $("body"), typing: $("typing"), online: $("online"), nav: $("room-nav"),
    state: $("conn-state"), notice: $("notice"), name: $("room-name"), topic: $("room-topic"), locked: $("room-locked"),
  };

  const state = {
    socket: null,
    ready: false,            // joined: sends may go out
    stopped: false,          // a final close or removal: no more reconnects
    attempts: 0,
    retryTimer: null,
    highestId: config.lastId || 0,
    // Where to resume: the highest id received after this connection's room.joined. Live
    // frames that arrive between hello and room.joined are newer than the replay still to
    // come, so resuming from them could skip it; the server sends the rest in id order.
    resumeId: config.lastId || 0,
    oldestId: config.oldestId,
    hasMore: config.hasMore,
    loadingOlder: false,
    rendered: new Map(),     // message id -> <li>
    unacked: new Map(),      // client_id -> body, until the server echoes the message back
    online: new Set(),
    typists: new Map(),      // username -> timer that hides them
    lastTypingSent: 0,
    lastReadSent: 0,
    readTimer: null,
  };

  // Rendering

  function formatTime(iso) {
    const date = new Date(iso);
    return isNaN(date) ? "" : date.toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"});
  }

  function messageElement() {
    const li = document.createElement("li");
    for (const [tag, cls] of [["span", "author"], ["time", ""], ["span", "body"], ["span", "edited"]]) {
      const el = document.createElement(tag);
      if (cls) el.className = cls;
      li.append(el, " ");
    }
    li.querySelector(".edited").textContent = "(edited)";
    return li;
  }

  function fillMessage(li, message) {
    li.className = `msg msg-${message.kind}` + (message.deleted ? " deleted" : "");
    li.dataset.id = String(message.id);
    li.querySelector(".author").textContent = message.author ? message.author.username : "(gone)";
    const time = li.querySelector("time");
    time.dateTime = message.created_at;
    time.textContent = formatTime(message.created_at);
    li.querySelector(".body").textContent = message.deleted ? "" : message.body;
    li.querySelector(".edited").hidden = !message.edited_at || message.deleted;
  }

  function nearBottom() {
    const s = ui.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
  }

  function scrollToBottom() {
    ui.scroller.scrollTop = ui.scroller.scrollHeight;
  }

  /* Insert in id order, once per id; a known id is refreshed instead. */
  function addMessage(message) {
    state.highestId = Math.max(state.highestId, message.id);
    if (state.oldestId == null || message.id < state.oldestId) state.oldestId = message.id;
    const known = state.rendered.get(message.id);
    if (known) {
      fillMessage(known, message);
      return;
    }
    const li = messageElement();
    fillMessage(li, message);
    state.rendered.set(message.id, li);
    const last = ui.list.lastElementChild;
    let next = null;
    if (last && Number(last.dataset.id) > message.id) {
      next = Array.from(ui.list.children).find((el) => Number(el.dataset.id) > message.id);
    }
    ui.list.insertBefore(li, next);
  }

  function addMessages(messages) {
    const stick = nearBottom();
    messages.forEach(addMessage);
    if (stick) scrollToBottom();
  }

  function renderOnline() {
    ui.online.replaceChildren(...Array.from(state.online).sort().map((name) => {
      const li = document.createElement("li");
      li.textContent = name;
      if (name === ME) li.className = "me";
      return li;
    }));
  }

  function renderTyping() {
    const names = Array.from(state.typists.keys());
    ui.typing.textContent = names.length === 0 ? ""
      : `${names.join(", ")} ${names.length === 1 ? "is" : "are"} typing…`;
  }

  function stopTyping(name) {
    clearTimeout(state.typists.get(name));
    if (state.typists.delete(name)) renderTyping();
  }

  function renderNav(rooms) {
    const home = ui.nav.firstElementChild;
    ui.nav.replaceChildren(home, ...rooms.map((room) => {
      const li = document.createElement("li");
      li.dataset.room = room.slug;
      const link = document.createElement("a");
      link.href = `/rooms/${encodeURIComponent(room.slug)}/`;
      link.textContent = room.name;
      const badge = document.createElement("span");
      badge.className = "badge unread";
      li.append(link, " ", badge);
      if (room.slug === ROOM) li.className = "current";
      setUnread(li, room.slug === ROOM ? 0 : room.unread);
      return li;
    }));
  }

  function navItem(slug) {
    return Array.from(ui.nav.children).find((li) => li.dataset.room === slug);
  }

  function setUnread(li, count) {
    if (!li) return;
    const badge = li.querySelector(".badge");
    badge.textContent = count > 0 ? String(count) : "";
    badge.hidden = !(count > 0);
  }

  function setConnection(name, label) {
    if (!ui.state) return;
    ui.state.className = `conn ${name}`;
    ui.state.textContent = label || name;
  }

  function showNotice(text, level) {
    ui.notice.textContent = text;
    ui.notice.className = `notice ${level || "info"}`;
    ui.notice.hidden = !text;
  }

  function setLocked(locked) {
    ui.locked.hidden = !locked;
    if (ui.body) ui.body.disabled = state.stopped || (locked && !config.user.isStaff);
  }

  // Sending

  function newClientId() {
    if (crypto.randomUUID) return crypto.randomUUID();
    // randomUUID needs a secure context; plain-HTTP deployments fall back to random bytes.
    return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function send(frame) {
    if (!state.ready || state.socket.readyState !== WebSocket.OPEN) return false;
    state.socket.send(JSON.stringify(frame));
    return true;
  }

  function transmit(clientId) {
    const body = state.unacked.get(clientId);
    if (body !== undefined) send({type: "message.send", room: ROOM, body, client_id: clientId, ref: clientId});
  }

  function pendingItem(clientId) {
    return Array.from(ui.pending.children).find((li) => li.dataset.clientId === clientId);
  }

  function sendMessage(body) {
    const clientId = newClientId();
    state.unacked.set(clientId, body);
    const li = messageElement();
    li.className = "msg msg-user pending";
    li.dataset.clientId = clientId;
    li.querySelector(".author").textContent = ME;
    li.querySelector("time").textContent = "sending…";
    li.querySelector(".body").textContent = body;
    li.querySelector(".edited").hidden = true;
    ui.pending.append(li);
    scrollToBottom();
    transmit(clientId);   // offline: it goes out after the next join
  }

  function acknowledge(message) {
    if (!message.client_id || !state.unacked.delete(message.client_id)) return false;
    const li = pendingItem(message.client_id);
    if (li) li.remove();
    return true;
  }

  function failSend(clientId, detail) {
    state.unacked.delete(clientId);
    const li = pendingItem(clientId);
    if (!li) return;
    li.classList.add("failed");
    li.querySelector("time").textContent = `not sent: ${detail} (click to dismiss)`;
    li.addEventListener("click", () => li.remove(), {once: true});
  }

  function markRead() {
    clearTimeout(state.readTimer);
    state.readTimer = setTimeout(() => {
      if (document.visibilityState !== "visible" || state.highestId <= state.lastReadSent) return;
      if (send({type: "read", room: ROOM, message_id: state.highestId})) state.lastReadSent = state.highestId;
    }, 300);
  }

  // REST

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  async function fetchPage(params) {
    const response = await fetch(`${config.historyUrl}?${new URLSearchParams(params)}`, {
      credentials: "same-origin",
      headers: {"Accept": "application/json", "X-CSRFToken": csrfToken()},
    });
    if (response.status === 401) location.assign(config.loginUrl);
    if (!response.ok) throw new Error(`history: HTTP ${response.status}`);
    return response.json();
  }

  async function loadOlder() {
    if (state.loadingOlder || !state.hasMore || state.oldestId == null) return;
    state.loadingOlder = true;
    ui.older.disabled = true;
    try {
      const page = await fetchPage({before: state.oldestId, limit: 50});
      const scroller = ui.scroller;
      const fromBottom = scroller.scrollHeight - scroller.scrollTop;
      page.results.forEach(addMessage);
      scroller.scrollTop = scroller.scrollHeight - fromBottom;   // keep the reader's place
      state.hasMore = page.has_more;
      ui.older.hidden = !state.hasMore;
    } catch (error) {
      showNotice(`Could not load older messages (${error.message}).`, "warning");
    } finally {
      state.loadingOlder = false;
      ui.older.disabled = false;
    }
  }

  async function fillGap(after, before) {
    try {
      for (let from = after, more = true; more;) {
        const page = await fetchPage({after: from, before, limit: GAP_PAGE});
        addMessages(page.results);
        more = page.has_more && page.results.length > 0;
        if (more) from = page.results[page.results.length - 1].id;
      }
    } catch (error) {
      showNotice(`Some messages could not be loaded (${error.message}); reload the page.`, "warning");
    }
  }

  // Server frames, one handler per type of chat/protocol.py

  const handlers = {
    "hello"(frame) {
      renderNav(frame.rooms);
      if (ui.body && frame.limits) ui.body.maxLength = frame.limits.max_body;
      // The page was opened as a member: if the room is not among the user's rooms now, they
      // were removed (or left) while this page was reconnecting. Joining again would undo that.
      if (!frame.rooms.some((room) => room.slug === ROOM)) return stop(LEFT_REASONS.gone);
      state.socket.send(JSON.stringify({type: "join", room: ROOM, since: state.resumeId, ref: "join"}));
    },
    "room.joined"(frame) {
      if (frame.room !== ROOM) return;
      state.ready = true;
      state.attempts = 0;
      setConnection("online");
      showNotice("");
      state.online = new Set(frame.online);
      renderOnline();
      state.unacked.forEach((_, clientId) => transmit(clientId));
      markRead();
    },
    "room.left"(frame) {
      if (frame.room === ROOM) stop(LEFT_REASONS[frame.reason] || LEFT_REASONS.left);
      else navItem(frame.room)?.remove();
    },
    "room.gap"(frame) {
      if (frame.room === ROOM) fillGap(frame.after, frame.before);
    },
    "room.updated"(frame) {
      if (frame.room !== ROOM) return;
      if (frame.archived) return stop(FINAL_CLOSES[4410]);
      ui.name.textContent = frame.name;
      ui.topic.textContent = frame.topic;
      document.title = `${frame.name} · Chat`;
      setLocked(frame.locked);
    },
    "message.new"(frame) {
      const message = frame.message;
      if (frame.room !== ROOM) {
        const li = navItem(frame.room);
        if (li && message.author?.username !== ME) {
          setUnread(li, Number(li.querySelector(".badge").textContent || 0) + 1);
        }
        return;
      }
      if (state.ready) state.resumeId = Math.max(state.resumeId, message.id);
      const mine = acknowledge(message);
      if (message.author) stopTyping(message.author.username);
      addMessages([message]);
      if (mine) scrollToBottom();
      markRead();
    },
    "message.updated"(frame) {
      const li = frame.room === ROOM && state.rendered.get(frame.message.id);
      if (li) fillMessage(li, frame.message);
    },
    "message.deleted"(frame) {
      const li = frame.room === ROOM && state.rendered.get(frame.id);
      if (!li) return;
      li.classList.add("deleted");
      li.querySelector(".body").textContent = "";
      li.querySelector(".edited").hidden = true;
    },
    "presence"(frame) {
      if (frame.room !== ROOM) return;
      if (frame.status === "online") state.online.add(frame.user.username);
      else state.online.delete(frame.user.username);
      renderOnline();
    },
    "member.joined"() {
      // The system message says so; presence says whether they are online.
    },
    "member.left"(frame) {
      if (frame.room !== ROOM || frame.user.username === ME) return;
      state.online.delete(frame.user.username);
      renderOnline();
    },
    "typing"(frame) {
      const name = frame.user.username;
      if (frame.room !== ROOM || name === ME) return;
      clearTimeout(state.typists.get(name));
      state.typists.set(name, setTimeout(() => stopTyping(name), TYPING_SHOWN_MS));
      renderTyping();
    },
    "unread"(frame) {
      setUnread(navItem(frame.room), frame.room === ROOM ? 0 : frame.count);
    },
    "notice"(frame) {
      if (!frame.room || frame.room === ROOM) showNotice(frame.text, frame.level);
    },
    "notice"(frame) {
      if (!frame.room || frame.room === ROOM) showNotice(frame.text, frame.level === "warning" ? "warning" : "info");
    },
    "pong"() {
      // Nothing to do: the browser answers the server's WebSocket pings itself.
    },
    "error"(frame) {
      if (frame.ref === "join") return stop(frame.detail);
      if (frame.ref && state.unacked.has(frame.ref)) {
        if (frame.code === "rate_limited") {
          setTimeout(() => transmit(frame.ref), (frame.retry_after || 1) * 1000);
        } else {
          failSend(frame.ref, frame.detail);
        }
      }
      showNotice(frame.detail, "warning");
    },
  };

  // Connection

  function dispatch(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    const handler = frame && handlers[frame.type];
    if (handler) handler(frame);
  }

  function backoff(attempt) {
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** attempt);
    return ceiling / 2 + Math.random() * ceiling / 2;   // jitter spreads a server restart's reconnects
  }

  function connect() {
    clearTimeout(state.retryTimer);
    state.retryTimer = null;
    setConnection("connecting", "connecting…");
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}${config.socketPath}`);
    state.socket = socket;
    socket.addEventListener("message", (event) => dispatch(event.data));
    socket.addEventListener("close", (event) => onClose(socket, event));
  }

  function onClose(socket, event) {
    if (socket !== state.socket) return;
    state.ready = false;
    if (state.stopped) return;
    if (event.code === 4401) {
      location.assign(config.loginUrl);
      return;
    }
    if (event.code in FINAL_CLOSES) {
      stop(FINAL_CLOSES[event.code]);
      return;
    }
    const delay = backoff(state.attempts++);
    setConnection("offline", `offline: retrying in ${Math.ceil(delay / 1000)} s`);
    state.retryTimer = setTimeout(connect, delay);
  }

  function stop(reason) {
    state.stopped = true;
    state.ready = false;
    clearTimeout(state.retryTimer);
    if (state.socket && state.socket.readyState <= WebSocket.OPEN) state.socket.close(1000);
    setConnection("offline", "disconnected");
    showNotice(reason, "warning");
    if (ui.body) ui.body.disabled = true;
  }

  // Wiring

  for (const li of ui.list.children) {
    state.rendered.set(Number(li.dataset.id), li);
    const time = li.querySelector("time");
    time.textContent = formatTime(time.dateTime) || time.textContent;
  }
  scrollToBottom();

  if (ui.composer) {
    ui.composer.addEventListener("submit", (event) => {
      event.preventDefault();
      const body = ui.body.value;
      if (!body.trim() || ui.body.disabled) return;
      sendMessage(body);
      ui.body.value = "";
      ui.body.focus();
    });
    ui.body.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        ui.composer.requestSubmit();
      }
    });
    ui.body.addEventListener("input", () => {
      const now = Date.now();
      if (ui.body.value.trim() && now - state.lastTypingSent >= TYPING_EVERY_MS
          && send({type: "typing", room: ROOM})) {
        state.lastTypingSent = now;
      }
    });
  }
  ui.older.addEventListener("click", loadOlder);
  ui.scroller.addEventListener("scroll", () => {
    if (ui.scroller.scrollTop < 40) loadOlder();
  });
  document.addEventListener("visibilitychange", markRead);
  window.addEventListener("focus", markRead);
  window.addEventListener("online", () => {
    if (state.retryTimer && !state.stopped) connect();   // the network is back: don't wait out the backoff
  });

  connect();
})();
