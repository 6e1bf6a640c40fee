// An HTTP/2 client for the tests (Node's http2, i.e. nghttp2): connects
// with mTLS, sends GET requests and prints one JSON line per event with
// its time in milliseconds since the start. Exits when the session
// closes, or at the deadline.
//
// node h2_client.js URL CA CERT KEY PATHS DEADLINE_MS
//   PATHS   comma-separated request paths (empty: no request)
'use strict';
const http2 = require('http2');
const fs = require('fs');

const [url, ca, cert, key, paths, deadline] = process.argv.slice(2);
const t0 = Date.now();
const log = (o) => console.log(JSON.stringify({ ...o, t: Date.now() - t0 }));

const session = http2.connect(url, {
  ca: fs.readFileSync(ca),
  cert: fs.readFileSync(cert),
  key: fs.readFileSync(key),
  servername: 'localhost',
});
session.on('connect', () => log({ ev: 'connect' }));
session.on('goaway', (code) => log({ ev: 'goaway', code }));
session.on('error', (e) => log({ ev: 'error', msg: String(e.message) }));
session.on('close', () => {
  log({ ev: 'close' });
  process.exit(0);
});

for (const path of (paths || '').split(',').filter((p) => p)) {
  const req = session.request({ ':path': path });
  let body = '';
  req.setEncoding('utf8');
  req.on('response', (h) => log({ ev: 'headers', path, status: h[':status'] }));
  req.on('data', (d) => (body += d));
  req.on('end', () => log({ ev: 'end', path, body }));
  req.on('error', (e) => log({ ev: 'stream_error', path, msg: String(e.message) }));
  req.end();
}

setTimeout(() => {
  log({ ev: 'deadline' });
  process.exit(0);
}, Number(deadline));
