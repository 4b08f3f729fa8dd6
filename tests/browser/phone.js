// A JsSIP phone for tests, driven from Python (tests/integration/browser_kit.py) through page.evaluate.
//
// window.phone.start({url, uri, password, ...}) connects and registers; call(target), answer(), hangup(),
// stop() do what they say. Everything JsSIP reports is appended to window.phoneEvents as {ev, ...} objects
// (registered, newRTCSession, progress, accepted, confirmed, ended, failed, ice, track...), which the test waits
// on. With loopbackIce (the default) only 127.0.0.1/::1 ICE candidates are offered and answered, so media
// between two pages, or between a page and a phone on this machine, never leaves the loopback interface.
(function () {
  "use strict";
  const events = [];
  window.phoneEvents = events;
  let ua = null;
  let session = null;
  let options = {};

  function log(ev, extra) {
    const entry = Object.assign({ ev: ev, t: Date.now() }, extra || {});
    events.push(entry);
    const pre = document.getElementById("log");
    if (pre) pre.textContent += JSON.stringify(entry) + "\n";
  }

  function loopbackOnly(sdp) {
    return sdp.split("\r\n").filter(function (line) {
      if (!line.startsWith("a=candidate:")) return true;
      const address = line.split(" ")[4];
      return address === "127.0.0.1" || address === "::1";
    }).join("\r\n");
  }

  function media() {
    return {
      mediaConstraints: { audio: true, video: false },
      pcConfig: { iceServers: [] },
    };
  }

  function attach(s, originator) {
    session = s;
    log("newRTCSession", { originator: originator, remote: s.remote_identity.uri.toString() });
    s.on("sdp", function (e) {
      if (options.loopbackIce !== false) e.sdp = loopbackOnly(e.sdp);
    });
    s.on("peerconnection", function (e) { watch(e.peerconnection); });
    s.on("progress", function (e) {
      log("progress", { originator: e.originator, status: e.response ? e.response.status_code : null });
    });
    s.on("accepted", function (e) { log("accepted", { originator: e.originator }); });
    s.on("confirmed", function (e) { log("confirmed", { originator: e.originator }); });
    s.on("ended", function (e) { log("ended", { originator: e.originator, cause: e.cause }); });
    s.on("failed", function (e) {
      const status = e.message && e.message.status_code ? e.message.status_code : null;
      log("failed", { originator: e.originator, cause: e.cause, status: status });
    });
    if (s.connection) watch(s.connection);
  }

  function watch(pc) {
    if (pc.__watched) return;
    pc.__watched = true;
    pc.addEventListener("iceconnectionstatechange", function () { log("ice", { state: pc.iceConnectionState }); });
    pc.addEventListener("track", function (e) { log("track", { kind: e.track.kind }); });
  }

  window.phone = {
    start: function (opts) {
      options = opts;
      document.getElementById("name").textContent = opts.uri;
      if (opts.debug) JsSIP.debug.enable("JsSIP:*");
      const socket = new JsSIP.WebSocketInterface(opts.url);
      ua = new JsSIP.UA({
        sockets: [socket],
        uri: opts.uri,
        password: opts.password,
        register: opts.register !== false,
        register_expires: opts.expires || 600,
        session_timers: false,
        connection_recovery_min_interval: 2,
        connection_recovery_max_interval: 30,
      });
      ua.on("connected", function () { log("connected"); });
      ua.on("disconnected", function () { log("disconnected"); });
      ua.on("registered", function (e) { log("registered", { status: e.response.status_code }); });
      ua.on("unregistered", function () { log("unregistered"); });
      ua.on("registrationFailed", function (e) { log("registrationFailed", { cause: e.cause }); });
      ua.on("newRTCSession", function (e) { attach(e.session, e.originator); });
      ua.start();
    },
    call: function (target) { ua.call(target, media()); },
    answer: function () { session.answer(media()); },
    hangup: function () { session.terminate(); },
    stop: function () { ua.stop(); },
    events: function () { return events.slice(); },
  };
})();
