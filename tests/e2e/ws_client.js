// Drives Node WebSocket clients against attestproxy for tests/e2e/test_websocket.py.
// Usage:
//   node ws_client.js echo URL N          the `ws` package: N messages echoed, then a clean close
//   node ws_client.js hold URL            the `ws` package: one message, then wait for the close
//   node ws_client.js realtime BASE_URL   the `openai` package's Realtime client (OpenAIRealtimeWS)
// Prints one JSON line per event on stdout: {"kind":"message","data":...}, {"kind":"open"},
// {"kind":"close","code":n,"reason":"..."}, {"kind":"error","message":"..."}.
'use strict';
const net = require('net');
const path = require('path');
const WebSocket = require(path.join(__dirname, 'node_modules', 'ws'));

const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');

function plain(url, n, hold) {
  const ws = new WebSocket(url);
  let got = 0;
  ws.on('open', () => {
    out({ kind: 'open' });
    for (let i = 0; i < (hold ? 1 : n); i++) ws.send(`node message ${i}`);
  });
  ws.on('message', (data) => {
    out({ kind: 'message', data: data.toString() });
    got++;
    if (!hold && got === n) ws.close(1000, 'done');
  });
  ws.on('close', (code, reason) => out({ kind: 'close', code, reason: reason.toString() }));
  ws.on('error', (e) => { out({ kind: 'error', message: String(e.message || e) }); process.exitCode = 1; });
}

async function realtime(baseURL) {
  const { OpenAI } = require(path.join(__dirname, 'node_modules', 'openai'));
  const { OpenAIRealtimeWS } = require(path.join(__dirname, 'node_modules', 'openai', 'realtime', 'ws'));
  const client = new OpenAI({ baseURL, apiKey: 'sk-test' });
  // The SDK always builds a wss:// URL from baseURL. `options` goes to the `ws` package, whose
  // createConnection replaces the TLS socket: the SDK then speaks ws:// to the daemon, which
  // holds the attested TLS connection to the enclave.
  const u = new URL(baseURL);
  const rt = new OpenAIRealtimeWS({
    model: 'sim-realtime',
    options: { createConnection: () => net.connect(Number(u.port), u.hostname) },
  }, client);
  let n = 0;
  rt.socket.on('open', () => {
    out({ kind: 'open', url: rt.url.toString() });
    rt.send({ type: 'session.update', session: { instructions: 'attested' } });
    rt.send({ type: 'response.create' });
  });
  rt.on('event', (ev) => {
    out({ kind: 'message', data: ev });
    if (ev.type === 'response.done' && ++n === 2) rt.close({ code: 1000, reason: 'done' });
  });
  rt.on('error', (e) => { out({ kind: 'error', message: String(e.message || e) }); process.exitCode = 1; });
  rt.socket.on('close', (code, reason) => out({ kind: 'close', code, reason: reason.toString() }));
}

const [mode, url, n] = process.argv.slice(2);
if (mode === 'realtime') realtime(url);
else plain(url, Number(n || 1), mode === 'hold');
