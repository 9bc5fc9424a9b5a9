/* The chat pages' behaviour: creating rooms on the rooms page, and a live room (WebSocket, history, presence,
 * typing, reconnection). User text only ever reaches the page through textContent. */
(function () {
  "use strict";

  const HISTORY_PAGE = 50;
  const TYPING_SEND_INTERVAL_MS = 1000;
  const TYPING_SHOWN_MS = 3000;
  const RECONNECT_BASE_MS = 500;
  const RECONNECT_MAX_MS = 15000;
  // A ping keeps idle proxies from cutting the socket; silence for much longer than that means the connection is
  // dead without the browser having noticed (a half-open TCP connection), so the page gives up on it.
  const PING_EVERY_MS = 25000;
  const SILENCE_LIMIT_MS = 60000;
  const RATE_LIMIT_RETRY_MS = 1500;

  // --- shared helpers -----------------------------------------------------------------------------------------

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  async function requestJson(url, options) {
    const response = await fetch(url, {
      credentials: "same-origin",
      ...options,
      headers: { Accept: "application/json", ...(options && options.headers) },
    });
    let body = null;
    try {
      body = await response.json();
    } catch (error) {
      // A proxy's HTML error page: the status alone has to do.
    }
    return { status: response.status, body: body };
  }

  /** The human sentence for an API error body (the contract's `detail`, or the validation messages). */
  function describeError(status, body) {
    if (status === 401) return "Your session has ended: log in again.";
    const detail = body && body.detail;
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail) && detail.length) return detail.map((item) => item.msg).join(" ");
    return "The server answered " + status + "; please try again.";
  }

  // crypto.randomUUID only exists in secure contexts (HTTPS, localhost); a plain-HTTP deployment still gets a
  // version 4 UUID from getRandomValues, which is available everywhere.
  function newClientId() {
    if (window.crypto.randomUUID) return window.crypto.randomUUID();
    const bytes = window.crypto.getRandomValues(new Uint8Array(16));
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const hex = Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
    return [hex.slice(0, 8), hex.slice(8, 12), hex.slice(12, 16), hex.slice(16, 20), hex.slice(20)].join("-");
  }

  // --- rooms page ---------------------------------------------------------------------------------------------

  function initRooms(form) {
    const list = document.getElementById("room-list");
    const empty = document.getElementById("no-rooms");
    const input = document.getElementById("room-name");
    const error = document.getElementById("create-room-error");
    const status = document.getElementById("create-room-status");
    const button = form.querySelector("button[type=submit]");

    function addRoom(room) {
      const link = element("a", "", room.name);
      link.href = list.dataset.roomUrl.replace("__slug__", encodeURIComponent(room.slug));
      const item = element("li");
      item.append(link);
      const after = Array.from(list.children).find(
        (existing) => existing.textContent.trim().localeCompare(room.name) > 0,
      );
      list.insertBefore(item, after || null);
      empty.hidden = true;
    }

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.textContent = "";
      status.textContent = "";
      const name = input.value.trim();
      if (!name) {
        error.textContent = "Give the room a name.";
        input.focus();
        return;
      }
      button.disabled = true;
      try {
        const { status: code, body } = await requestJson(form.action, {
          method: "POST",
          headers: {
            "Content-Type": "application/json",
            "X-CSRFToken": form.elements.csrfmiddlewaretoken.value,
          },
          body: JSON.stringify({ name: name }),
        });
        if (code === 201) {
          addRoom(body);
          input.value = "";
          status.textContent = "Room \u201c" + body.name + "\u201d created.";
        } else {
          error.textContent = describeError(code, body);
          input.focus();
        }
      } catch (failure) {
        error.textContent = "Could not reach the server; check your connection and try again.";
      } finally {
        button.disabled = false;
      }
    });
  }

  // --- room page ----------------------------------------------------------------------------------------------

  function initRoom(root) {
    const me = { id: Number(root.dataset.userId), username: root.dataset.username };
    const log = document.getElementById("log");
    const messageList = document.getElementById("messages");
    const outbox = document.getElementById("outbox");
    const loadOlderButton = document.getElementById("load-older");
    const historyStart = document.getElementById("history-start");
    const historyError = document.getElementById("history-error");
    const connection = document.getElementById("connection");
    const typingLine = document.getElementById("typing");
    const notice = document.getElementById("notice");
    const onlineList = document.getElementById("online");
    const onlineCount = document.getElementById("online-count");
    const composer = document.getElementById("composer");
    const textarea = document.getElementById("composer-text");

    let socket = null;
    // True once the current socket's welcome arrived: frames sent before it could precede the backfill.
    let welcomed = false;
    let reconnectAttempts = 0;
    let reconnectTimer = null;
    let lastFrameAt = 0;
    let stopped = false;

    // Confirmed messages by id, their ids kept sorted: the list shows each id once, in id order.
    const shownIds = [];
    const shownById = new Map();
    // Where a reconnect resumes (`?after=`). Messages from the history API are a consistent snapshot, but live
    // ones are broadcast by several server processes and may arrive a few milliseconds out of id order: the
    // newest id seen live may have an older sibling still in flight. So live ids only count once they have
    // settled for RESUME_SETTLE_MS; until then a reconnect asks from the last settled id, and whatever the server
    // sends twice is dropped by id. Null until the page knows where the room stands.
    const RESUME_SETTLE_MS = 2000;
    let settledId = null;
    const unsettled = []; // [id, received at], in arrival order

    function settle(id) {
      settledId = settledId === null ? id : Math.max(settledId, id);
    }

    function resumeAfter() {
      const cutoff = Date.now() - RESUME_SETTLE_MS;
      while (unsettled.length && unsettled[0][1] <= cutoff) settle(unsettled.shift()[0]);
      return settledId;
    }
    let firstPageLoaded = false;
    let hasOlder = true;
    let historyRequest = null;

    // Sent but not acknowledged, by client_id, in the order written: resent with the same client_id after a
    // reconnect, which the server stores once.
    const pending = new Map();
    let rateLimitRetry = null;

    const online = new Map();
    const typers = new Map();
    let lastTypingSentAt = 0;

    function setConnection(state, text) {
      connection.dataset.state = state;
      connection.textContent = text;
    }

    function nearBottom() {
      return log.scrollHeight - log.scrollTop - log.clientHeight < 80;
    }

    function scrollToBottom() {
      log.scrollTop = log.scrollHeight;
    }

    function formatTime(date) {
      return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    }

    function messageItem(author, text, when) {
      const item = element("li", "message");
      if (author.id === me.id) item.classList.add("mine");
      const meta = element("div", "meta");
      meta.append(element("span", "author", author.username));
      const time = element("time", "", formatTime(when));
      time.dateTime = when.toISOString();
      time.title = when.toLocaleString();
      meta.append(time);
      item.append(meta, element("p", "text", text));
      return item;
    }

    /** Insert a confirmed message at its place by id; one already shown is left alone. */
    function showMessage(message, live) {
      if (live) unsettled.push([message.id, Date.now()]);
      else settle(message.id);
      if (shownById.has(message.id)) return;
      const item = messageItem(message.user, message.text, new Date(message.created_at));
      item.dataset.id = String(message.id);
      let low = 0;
      let high = shownIds.length;
      while (low < high) {
        const middle = (low + high) >> 1;
        if (shownIds[middle] < message.id) low = middle + 1;
        else high = middle;
      }
      const next = low < shownIds.length ? shownById.get(shownIds[low]) : null;
      messageList.insertBefore(item, next);
      shownIds.splice(low, 0, message.id);
      shownById.set(message.id, item);
    }

    // --- history ---

    function setHasOlder(value) {
      hasOlder = value;
      loadOlderButton.hidden = !value;
      historyStart.hidden = value;
    }

    /** The page of messages just older than the oldest shown (the newest page when nothing is shown yet). */
    function loadOlder() {
      if (historyRequest || !hasOlder) return;
      const params = new URLSearchParams({ limit: String(HISTORY_PAGE) });
      if (shownIds.length) params.set("before", String(shownIds[0]));
      const url = root.dataset.historyUrl + "?" + params;
      historyError.textContent = "";
      loadOlderButton.disabled = true;
      historyRequest = requestJson(url)
        .then(({ status, body }) => {
          if (status !== 200) {
            historyError.textContent = "Could not load messages: " + describeError(status, body);
            loadOlderButton.hidden = false;
            return;
          }
          const first = !firstPageLoaded;
          // Prepending moves what the reader is looking at; keep its distance from the bottom instead.
          const fromBottom = log.scrollHeight - log.scrollTop;
          body.items.forEach((message) => showMessage(message, false));
          if (first) {
            firstPageLoaded = true;
            if (settledId === null) settledId = 0;
            scrollToBottom();
          } else {
            log.scrollTop = log.scrollHeight - fromBottom;
          }
          setHasOlder(body.has_more);
        })
        .catch(() => {
          historyError.textContent = "Could not load messages; check your connection and try again.";
          loadOlderButton.hidden = false;
        })
        .finally(() => {
          historyRequest = null;
          loadOlderButton.disabled = false;
        });
    }

    loadOlderButton.addEventListener("click", loadOlder);
    log.addEventListener("scroll", () => {
      if (log.scrollTop < 40 && firstPageLoaded) loadOlder();
    });

    // --- presence and typing ---

    function renderOnline() {
      const users = Array.from(online.values()).sort((a, b) => a.username.localeCompare(b.username));
      onlineList.replaceChildren(
        ...users.map((user) => {
          const item = element("li", "", user.username);
          if (user.id === me.id) item.append(element("span", "muted", " (you)"));
          return item;
        }),
      );
      onlineCount.textContent = "(" + users.length + ")";
    }

    function renderTyping() {
      const names = Array.from(typers.keys());
      if (names.length === 0) typingLine.textContent = "";
      else if (names.length === 1) typingLine.textContent = names[0] + " is typing\u2026";
      else if (names.length === 2) typingLine.textContent = names[0] + " and " + names[1] + " are typing\u2026";
      else typingLine.textContent = "Several people are typing\u2026";
    }

    function stopTyping(username) {
      if (!typers.has(username)) return;
      clearTimeout(typers.get(username));
      typers.delete(username);
      renderTyping();
    }

    function startTyping(username) {
      clearTimeout(typers.get(username));
      typers.set(username, setTimeout(() => stopTyping(username), TYPING_SHOWN_MS));
      renderTyping();
    }

    // --- sending ---

    function isOpen() {
      return socket !== null && socket.readyState === WebSocket.OPEN && welcomed;
    }

    function transmit(clientId) {
      const entry = pending.get(clientId);
      if (!entry) return;
      if (isOpen()) {
        socket.send(JSON.stringify({ type: "message", text: entry.text, client_id: clientId }));
        entry.state.textContent = "Sending\u2026";
      } else {
        entry.state.textContent = "Waiting for the connection\u2026";
      }
    }

    function resendPending() {
      pending.forEach((entry, clientId) => transmit(clientId));
    }

    function confirmPending(clientId) {
      const entry = pending.get(clientId);
      if (!entry) return null;
      pending.delete(clientId);
      entry.item.remove();
      return entry;
    }

    composer.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = textarea.value;
      if (stopped || !text.trim()) return;
      const clientId = newClientId();
      const item = messageItem(me, text, new Date());
      item.classList.add("pending");
      const state = element("span", "state");
      item.querySelector(".meta").append(state);
      outbox.append(item);
      pending.set(clientId, { text: text, item: item, state: state });
      transmit(clientId);
      textarea.value = "";
      notice.textContent = "";
      scrollToBottom();
    });

    textarea.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        composer.requestSubmit();
      }
    });

    textarea.addEventListener("input", () => {
      const now = Date.now();
      if (textarea.value.trim() && isOpen() && now - lastTypingSentAt >= TYPING_SEND_INTERVAL_MS) {
        lastTypingSentAt = now;
        socket.send(JSON.stringify({ type: "typing" }));
      }
    });

    // --- the socket ---

    const handlers = {
      welcome(event) {
        welcomed = true;
        reconnectAttempts = 0;
        setConnection("open", "Connected");
        online.clear();
        event.online.forEach((user) => online.set(user.id, user));
        renderOnline();
        if (!firstPageLoaded) loadOlder();
        resendPending();
      },
      message(event) {
        const stick = nearBottom();
        if (event.user.id === me.id) confirmPending(event.client_id);
        stopTyping(event.user.username);
        showMessage(event, true);
        if (stick) scrollToBottom();
      },
      ack(event) {
        const entry = confirmPending(event.client_id);
        // The broadcast of the same message may still be on its way (or lost): the ack alone confirms it.
        if (entry) {
          showMessage({ id: event.id, user: me, text: entry.text, created_at: new Date().toISOString() }, true);
          scrollToBottom();
        }
      },
      presence(event) {
        if (event.event === "join") online.set(event.user.id, event.user);
        else {
          online.delete(event.user.id);
          stopTyping(event.user.username);
        }
        renderOnline();
      },
      typing(event) {
        if (event.user.id !== me.id) startTyping(event.user.username);
      },
      pong() {},
      error(event) {
        if (event.code === "rate_limited") {
          // The refused message is still pending; a resend is stored once, whichever of them got through.
          notice.textContent = "Sending too fast; retrying in a moment.";
          clearTimeout(rateLimitRetry);
          rateLimitRetry = setTimeout(() => {
            notice.textContent = "";
            resendPending();
          }, RATE_LIMIT_RETRY_MS);
        } else {
          notice.textContent = event.detail;
        }
      },
    };

    function socketUrl() {
      const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
      const after = resumeAfter();
      const query = after === null ? "" : "?after=" + after;
      return scheme + "//" + window.location.host + root.dataset.socketPath + query;
    }

    function connect() {
      reconnectTimer = null;
      setConnection("connecting", reconnectAttempts ? "Reconnecting\u2026" : "Connecting\u2026");
      const ws = new WebSocket(socketUrl());
      socket = ws;
      welcomed = false;
      lastFrameAt = Date.now();
      ws.addEventListener("message", (frame) => {
        if (socket !== ws) return;
        lastFrameAt = Date.now();
        let event;
        try {
          event = JSON.parse(frame.data);
        } catch (error) {
          return;
        }
        const handler = handlers[event.type];
        if (handler) handler(event);
      });
      ws.addEventListener("close", (event) => {
        if (socket === ws) lost(event.code);
      });
    }

    function lost(code) {
      socket = null;
      welcomed = false;
      if (stopped) return;
      pending.forEach((entry) => (entry.state.textContent = "Waiting for the connection\u2026"));
      Array.from(typers.keys()).forEach(stopTyping);
      if (code === 4001) return giveUp("Your session has ended.", true);
      if (code === 4003) return giveUp("You may not join this room.");
      if (code === 4004) return giveUp("This room no longer exists.");
      // Exponential backoff with jitter, so that a restarted server is not hit by every client at once.
      const ceiling = Math.min(RECONNECT_MAX_MS, RECONNECT_BASE_MS * 2 ** reconnectAttempts);
      const delay = ceiling / 2 + (Math.random() * ceiling) / 2;
      reconnectAttempts += 1;
      setConnection("closed", "Connection lost; reconnecting in " + Math.ceil(delay / 1000) + " s\u2026");
      reconnectTimer = setTimeout(connect, delay);
    }

    function giveUp(text, offerLogin) {
      stopped = true;
      setConnection("closed", text);
      if (offerLogin) {
        const link = element("a", "", "Log in again");
        link.href = root.dataset.loginUrl;
        connection.append(" ", link);
      }
      composer.querySelector("button").disabled = true;
    }

    /** Drop a connection the browser still thinks is alive, and reconnect at once. */
    function abandon() {
      const ws = socket;
      socket = null;
      if (ws) ws.close();
      lost(1006);
    }

    setInterval(() => {
      if (!isOpen()) return;
      if (Date.now() - lastFrameAt > SILENCE_LIMIT_MS) abandon();
      else socket.send(JSON.stringify({ type: "ping" }));
    }, PING_EVERY_MS);

    // The browser knows the network is gone before the socket does (which may take minutes to notice): stop
    // sending into it and start reconnecting, so that messages written meanwhile wait visibly in the outbox.
    window.addEventListener("offline", () => {
      if (socket !== null) abandon();
    });

    // Back online: no reason to sit out the rest of the backoff.
    window.addEventListener("online", () => {
      if (reconnectTimer !== null) {
        clearTimeout(reconnectTimer);
        connect();
      }
    });

    connect();
  }

  const roomsForm = document.getElementById("create-room");
  if (roomsForm) initRooms(roomsForm);
  const room = document.querySelector("main[data-room]");
  if (room) initRoom(room);
})();
