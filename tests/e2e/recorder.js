// Injected into the demo page before its own scripts (page.add_init_script) by
// tests/e2e. It changes nothing the page does; it only lets the test hear what the
// page hears:
//  - getUserMedia is wrapped so the test can reach the microphone stream the page
//    sends (after Chromium's own processing: echo cancellation, noise suppression,
//    gain control, exactly as the page asked for them);
//  - window.__e2e.start() records that microphone and the page's remote audio
//    (the srcObject of #remote-audio, which the page plays) side by side in one
//    AudioContext, so their timelines are sample-aligned; window.__e2e.take()
//    stops and returns the recording as base64 interleaved int16 (mic, remote).
// Chromium feeds a remote WebRTC stream to WebAudio only while a media element
// plays it: the page's <audio autoplay> does that.
"use strict";

(() => {
  const e2e = { mic: null, rec: null };
  window.__e2e = e2e;

  const devices = navigator.mediaDevices;
  if (devices && devices.getUserMedia) {
    const original = devices.getUserMedia.bind(devices);
    devices.getUserMedia = async (constraints) => {
      const stream = await original(constraints);
      e2e.mic = stream;
      return stream;
    };
  }

  e2e.start = async () => {
    if (e2e.rec) throw new Error("already recording");
    const remote = document.getElementById("remote-audio").srcObject;
    if (!e2e.mic) throw new Error("the page has no microphone stream");
    if (!remote) throw new Error("the page has no remote audio stream");
    const ctx = new AudioContext({ sampleRate: 48000 });
    await ctx.resume();
    const merger = ctx.createChannelMerger(2);
    ctx.createMediaStreamSource(e2e.mic).connect(merger, 0, 0);
    ctx.createMediaStreamSource(remote).connect(merger, 0, 1);
    const proc = ctx.createScriptProcessor(4096, 2, 2);
    const rec = { ctx, proc, merger, chunks: [], samples: 0 };
    proc.onaudioprocess = (e) => {
      const a = e.inputBuffer.getChannelData(0);
      const b = e.inputBuffer.getChannelData(1);
      const out = new Int16Array(a.length * 2);
      for (let i = 0; i < a.length; i++) {
        out[2 * i] = Math.max(-32768, Math.min(32767, Math.round(a[i] * 32767)));
        out[2 * i + 1] = Math.max(-32768, Math.min(32767, Math.round(b[i] * 32767)));
      }
      rec.chunks.push(out);
      rec.samples += a.length;
    };
    merger.connect(proc);
    proc.connect(ctx.destination); // a ScriptProcessor only runs while connected
    e2e.rec = rec;
    return ctx.sampleRate;
  };

  // Seconds recorded so far (0 when not recording).
  e2e.seconds = () => (e2e.rec ? e2e.rec.samples / e2e.rec.ctx.sampleRate : 0);

  e2e.take = async () => {
    const rec = e2e.rec;
    if (!rec) throw new Error("not recording");
    e2e.rec = null;
    rec.proc.onaudioprocess = null;
    rec.proc.disconnect();
    rec.merger.disconnect();
    const rate = rec.ctx.sampleRate;
    await rec.ctx.close();
    const all = new Int16Array(rec.samples * 2);
    let at = 0;
    for (const c of rec.chunks) { all.set(c, at); at += c.length; }
    const bytes = new Uint8Array(all.buffer);
    let text = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return { rate, pcm: btoa(text) };
  };
})();
