// voxline demo page: microphone over WebRTC to an agent, with the session's events
// (transcript, agent state, per-turn latency) from the events WebSocket.
//
// No build step and no dependencies. Signalling is non-trickle: the offer is sent
// once ICE gathering is complete, which is what POST /v1/webrtc/offer expects.
// The API token (if the server requires one) goes in the Authorization header for
// HTTP and, since browsers cannot set headers on a WebSocket, as the subprotocol
// "bearer.<token>" next to "voxline.v1" (a subprotocol, not a query parameter, so
// the token does not end up in access logs, proxies or history).
//
// For tests: element ids are stable, and window.voxline exposes
//   state       {status, sessionId, agent, agentState, callerState, level, remoteAudio, error}
//   transcripts [{turn, who, text, final}]
//   turns       [{turn, marks, segments_ms, voice_to_voice_ms, violations}]
//   events      the last events received (bounded)
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "voxline.token";
  const AGENT_KEY = "voxline.agent";
  const ICE_GATHER_TIMEOUT_MS = 5000;
  const MAX_EVENTS = 500;
  const MAX_TURNS = 50;
  // The marks of a turn in path order, and what the waterfall calls them.
  const MARKS = [
    ["speech_end", "end of speech"],
    ["vad_end", "VAD"],
    ["transcript", "transcript"],
    ["first_token", "first token"],
    ["first_sentence", "first sentence"],
    ["first_tts_audio", "first audio"],
    ["first_played", "heard"],
  ];

  const state = {
    status: "idle", sessionId: null, agent: null, agentState: null, callerState: null,
    level: 0, remoteAudio: false, error: null,
  };
  const transcripts = [];
  const turns = [];
  const events = [];
  window.voxline = { state, transcripts, turns, events };

  let pc = null;
  let ws = null;
  let mic = null;
  let audioCtx = null;
  let meterFrame = 0;

  const token = () => $("token").value.trim();
  const authHeaders = () => (token() ? { Authorization: `Bearer ${token()}` } : {});

  function setStatus(status, detail) {
    state.status = status;
    state.error = status === "error" ? detail || null : state.error;
    document.body.dataset.status = status;
    $("status").textContent = detail ? `${status}: ${detail}` : status;
    const busy = status === "connecting" || status === "live";
    $("start").disabled = busy;
    $("stop").disabled = !busy;
    $("interrupt").disabled = status !== "live";
    $("agent").disabled = busy;
  }

  async function loadAgents() {
    // The agent list is the OpenAPI document's enum: the page never disagrees with the server.
    let agents = ["assistant", "echo", "transcribe"];
    try {
      const doc = await (await fetch("/openapi.json")).json();
      agents = doc.components.schemas.WebRtcOffer.properties.agent.enum || agents;
    } catch (e) { /* keep the defaults */ }
    const select = $("agent");
    select.replaceChildren(...agents.map((a) => new Option(a, a)));
    const saved = localStorage.getItem(AGENT_KEY);
    if (saved && agents.includes(saved)) select.value = saved;
  }

  function iceGatheringComplete(peer, timeoutMs) {
    if (peer.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, timeoutMs); // send what was gathered so far
      function done() {
        clearTimeout(timer);
        peer.removeEventListener("icegatheringstatechange", check);
        resolve();
      }
      function check() { if (peer.iceGatheringState === "complete") done(); }
      peer.addEventListener("icegatheringstatechange", check);
    });
  }

  function errorText(resp, body) {
    const e = body && body.error;
    if (resp.status === 401) return "the server needs a valid API token";
    if (e) return e.field ? `${e.message} (${e.field})` : e.message;
    return `HTTP ${resp.status}`;
  }

  async function start() {
    setStatus("connecting");
    resetCall();
    try {
      mic = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
      startMeter(mic);
      pc = new RTCPeerConnection({ iceServers: [] });
      mic.getAudioTracks().forEach((t) => pc.addTrack(t, mic));
      pc.ontrack = (ev) => {
        $("remote-audio").srcObject = ev.streams[0] || new MediaStream([ev.track]);
        state.remoteAudio = true;
      };
      pc.onconnectionstatechange = () => {
        if (pc && pc.connectionState === "failed") fail("the media connection failed");
      };
      await pc.setLocalDescription(await pc.createOffer());
      await iceGatheringComplete(pc, ICE_GATHER_TIMEOUT_MS);
      const agent = $("agent").value;
      localStorage.setItem(AGENT_KEY, agent);
      const resp = await fetch("/v1/webrtc/offer", {
        method: "POST",
        headers: { "Content-Type": "application/json", ...authHeaders() },
        body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer", agent }),
      });
      const body = await resp.json().catch(() => ({}));
      if (!resp.ok) throw new Error(errorText(resp, body));
      state.sessionId = body.session_id;
      state.agent = agent;
      $("session-id").textContent = body.session_id;
      openEvents(body.session_id);
      await pc.setRemoteDescription({ type: "answer", sdp: body.sdp });
      setStatus("live");
    } catch (e) {
      fail(e.message || String(e));
    }
  }

  async function stop() {
    const id = state.sessionId;
    teardown();
    setStatus("ended");
    if (id) {
      await fetch(`/v1/sessions/${id}`, { method: "DELETE", headers: authHeaders() }).catch(() => {});
    }
  }

  async function interrupt() {
    if (!state.sessionId) return;
    await fetch(`/v1/sessions/${state.sessionId}/interrupt`, { method: "POST", headers: authHeaders() })
      .catch(() => {});
  }

  function fail(message) {
    const id = state.sessionId;
    teardown();
    setStatus("error", message);
    if (id) fetch(`/v1/sessions/${id}`, { method: "DELETE", headers: authHeaders() }).catch(() => {});
  }

  function teardown() {
    if (ws) { ws.onclose = null; ws.close(); ws = null; }
    if (pc) { pc.ontrack = null; pc.onconnectionstatechange = null; pc.close(); pc = null; }
    if (mic) { mic.getTracks().forEach((t) => t.stop()); mic = null; }
    if (meterFrame) cancelAnimationFrame(meterFrame);
    meterFrame = 0;
    if (audioCtx) { audioCtx.close().catch(() => {}); audioCtx = null; }
    setLevel(0);
    state.sessionId = null;
  }

  function resetCall() {
    transcripts.length = 0;
    turns.length = 0;
    events.length = 0;
    Object.assign(state, { agentState: null, callerState: null, remoteAudio: false, error: null });
    $("transcript").replaceChildren();
    $("turns").replaceChildren();
    $("agent-state").textContent = "—";
    $("caller-state").textContent = "—";
    $("session-id").textContent = "—";
  }

  // -- events --------------------------------------------------------------------------

  function openEvents(id) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const protocols = ["voxline.v1"];
    if (token()) protocols.push(`bearer.${token()}`);
    ws = new WebSocket(`${scheme}//${location.host}/v1/sessions/${id}/events`, protocols);
    ws.onmessage = (msg) => onEvent(JSON.parse(msg.data));
    ws.onclose = () => {
      ws = null;
      if (state.status === "live") { teardown(); setStatus("ended"); }
    };
  }

  function onEvent(ev) {
    events.push(ev);
    if (events.length > MAX_EVENTS) events.shift();
    const d = ev.data || {};
    switch (ev.kind) {
      case "session":
        if (d.state === "ended" && state.status === "live") {
          teardown();
          setStatus("ended", d.reason || "");
        }
        break;
      case "state":
        if (d.agent !== undefined) { state.agentState = d.agent; $("agent-state").textContent = d.agent; }
        if (d.caller !== undefined) { state.callerState = d.caller; $("caller-state").textContent = d.caller; }
        break;
      case "transcript":
        addTranscript(ev.turn, d.who === "agent" ? "agent" : "caller", d.text || "", d.final !== false);
        break;
      case "heard":
        if (d.complete === false) markCut(ev.turn, d.text || "");
        break;
      case "latency":
        turns.push({ turn: ev.turn, ...d });
        if (turns.length > MAX_TURNS) turns.shift();
        renderTurns();
        break;
      case "error":
        $("status").textContent = `live — ${d.provider || "agent"} error: ${d.error || ""}`;
        break;
      default:
        break;
    }
  }

  function addTranscript(turn, who, text, final) {
    // An interim line of this speaker and turn is replaced as the recogniser refines it.
    const list = $("transcript");
    let entry = transcripts.find((t) => t.turn === turn && t.who === who && !t.final);
    let li = list.querySelector(`li[data-turn="${turn}"][data-who="${who}"][data-final="false"]`);
    if (!entry) {
      entry = { turn, who, text, final };
      transcripts.push(entry);
      li = document.createElement("li");
      li.dataset.turn = String(turn);
      li.dataset.who = who;
      list.append(li);
    }
    entry.text = text;
    entry.final = final;
    li.dataset.final = String(final);
    li.textContent = text;
    li.scrollIntoView({ block: "nearest" });
  }

  function markCut(turn, heard) {
    const li = $("transcript").querySelector(`li[data-turn="${turn}"][data-who="agent"]`);
    if (li) { li.classList.add("cut"); li.title = `heard: ${heard}`; }
    const entry = transcripts.find((t) => t.turn === turn && t.who === "agent");
    if (entry) entry.heard = heard;
  }

  // -- latency waterfall ---------------------------------------------------------------

  function renderTurns() {
    const spans = turns.map(span);
    const scale = Math.max(1.0, ...spans.map((s) => s.total)); // seconds across the width
    const rows = turns.map((t, i) => renderTurn(t, spans[i], scale)).reverse(); // newest first
    $("turns").replaceChildren(...rows);
  }

  function span(t) {
    const marks = t.marks || {};
    const present = MARKS.filter(([k]) => typeof marks[k] === "number");
    const t0 = present.length ? marks[present[0][0]] : 0;
    const total = present.length ? marks[present[present.length - 1][0]] - t0 : 0;
    return { marks, present, t0, total };
  }

  function renderTurn(t, s, scale) {
    const box = document.createElement("article");
    box.className = "turn";
    box.dataset.turn = String(t.turn);
    const v2v = t.voice_to_voice_ms;
    const title = document.createElement("h3");
    title.textContent = `Turn ${t.turn}` + (typeof v2v === "number" ? ` · voice to voice ${Math.round(v2v)} ms` : "");
    box.append(title);
    const violations = new Set(t.violations || []);
    for (let i = 1; i < s.present.length; i++) {
      const [prevKey] = s.present[i - 1];
      const [key, label] = s.present[i];
      const start = s.marks[prevKey] - s.t0;
      const dur = s.marks[key] - s.marks[prevKey];
      const row = document.createElement("div");
      row.className = "segment" + (violations.has(key) ? " over" : "");
      row.dataset.mark = key;
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = label;
      const track = document.createElement("span");
      track.className = "track";
      const bar = document.createElement("span");
      bar.className = "bar";
      const width = Math.max(0.5, (100 * dur) / scale); // a sliver stays visible...
      bar.style.left = `${Math.min((100 * start) / scale, 100 - width)}%`; // ...inside its track
      bar.style.width = `${width}%`;
      track.append(bar);
      const ms = document.createElement("span");
      ms.className = "ms";
      ms.textContent = `${Math.round(dur * 1000)} ms`;
      row.append(name, track, ms);
      box.append(row);
    }
    return box;
  }

  // -- input level ---------------------------------------------------------------------

  function startMeter(stream) {
    audioCtx = new AudioContext();
    const analyser = audioCtx.createAnalyser();
    analyser.fftSize = 1024;
    audioCtx.createMediaStreamSource(stream).connect(analyser);
    const buf = new Float32Array(analyser.fftSize);
    const tick = () => {
      analyser.getFloatTimeDomainData(buf);
      let sum = 0;
      for (let i = 0; i < buf.length; i++) sum += buf[i] * buf[i];
      const db = 20 * Math.log10(Math.sqrt(sum / buf.length) + 1e-9);
      setLevel(Math.max(0, Math.min(100, ((db + 60) / 60) * 100))); // -60..0 dBFS
      meterFrame = requestAnimationFrame(tick);
    };
    tick();
  }

  function setLevel(pct) {
    state.level = Math.round(pct);
    $("level-bar").style.width = `${pct}%`;
    $("level").setAttribute("aria-valuenow", String(state.level));
  }

  // -- wiring --------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("token").value = localStorage.getItem(TOKEN_KEY) || "";
    $("token").addEventListener("change", () => localStorage.setItem(TOKEN_KEY, token()));
    $("start").addEventListener("click", start);
    $("stop").addEventListener("click", stop);
    $("interrupt").addEventListener("click", interrupt);
    window.addEventListener("pagehide", () => { if (state.sessionId) stop(); });
    setStatus("idle");
    loadAgents();
  });
})();
