//! A tiny W3C WebDriver client: plain HTTP/1.1 and JSON to a `chromedriver`
//! this test starts on an ephemeral port, driving Debian's headless
//! Chromium. Only the commands the console test needs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

/// The key WebDriver names an element reference with.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Whether Chromium and chromedriver are installed; without them the test
/// skips with a notice, unless `CI` is set (then it fails).
pub(crate) fn available() -> bool {
    let found = ["chromium", "chromedriver"].iter().all(|tool| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium and chromedriver are required in CI (Debian: chromium chromium-driver)"
        );
        println!("skipped: chromium or chromedriver is not installed");
    }
    found
}

/// A running chromedriver with one browser session.
pub(crate) struct Browser {
    driver: Child,
    port: u16,
    session: String,
}

impl Browser {
    /// Starts chromedriver (port 0: it picks and prints one) and a headless
    /// Chromium that accepts the CA's certificate, with `tz` as its time zone.
    pub(crate) fn start(tz: &str) -> Browser {
        let mut driver = Command::new("chromedriver")
            .arg("--port=0")
            .env("TZ", tz)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let stdout = driver.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    let port: u16 = rest.trim_end_matches('.').trim().parse().unwrap();
                    let _ = tx.send(port);
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("chromedriver announces its port");
        let mut browser = Browser {
            driver,
            port,
            session: String::new(),
        };
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            // The CA's server certificate chains to a root made by this
            // test; Chromium's trust store does not hold it. TLS itself is
            // judged by openssl and curl in the other tests.
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900",
                         "--no-first-run", "--disable-extensions"]
            }
        }}});
        let answer = browser.call("POST", "/session", Some(&caps));
        browser.session = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_owned();
        browser
    }

    /// One WebDriver command; panics on a WebDriver error.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let answer = self.try_call(method, path, body);
        if let Some(err) = answer.get("error") {
            panic!("WebDriver {method} {path}: {err}: {}", answer["message"]);
        }
        answer
    }

    /// One WebDriver command; returns `value` (an error object on failure).
    fn try_call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        let body = body.map(Value::to_string).unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )
        .unwrap();
        // Read the head, then exactly the body: chromedriver may keep the
        // connection open whatever `Connection: close` says.
        let mut raw = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        let split = loop {
            if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "WebDriver closed the connection early");
            raw.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
        let mut body = raw[split + 4..].to_vec();
        let length = head.lines().find_map(|l| {
            l.strip_prefix("content-length:")
                .and_then(|v| v.trim().parse::<usize>().ok())
        });
        let payload = match length {
            Some(length) => {
                while body.len() < length {
                    let n = stream.read(&mut buf).unwrap();
                    assert!(n > 0, "WebDriver closed the connection early");
                    body.extend_from_slice(&buf[..n]);
                }
                body.truncate(length);
                body
            }
            None => {
                stream.read_to_end(&mut body).unwrap();
                if head.contains("transfer-encoding: chunked") {
                    dechunk(&body)
                } else {
                    body
                }
            }
        };
        let payload = String::from_utf8_lossy(&payload);
        let v: Value = serde_json::from_str(&payload)
            .unwrap_or_else(|e| panic!("WebDriver answer is not JSON ({e}): {payload}"));
        v["value"].clone()
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Opens `url` and waits for the page to load.
    pub(crate) fn goto(&self, url: &str) {
        self.call("POST", &self.s("/url"), Some(&json!({ "url": url })));
    }

    /// The current URL.
    pub(crate) fn url(&self) -> String {
        self.call("GET", &self.s("/url"), None)
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The page's HTML as the browser holds it now.
    pub(crate) fn source(&self) -> String {
        self.call("GET", &self.s("/source"), None)
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The element matching a CSS selector; waits up to 10 s for it.
    pub(crate) fn find(&self, css: &str) -> String {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.try_call(
                "POST",
                &self.s("/element"),
                Some(&json!({"using": "css selector", "value": css})),
            );
            if let Some(id) = v.get(ELEMENT).and_then(Value::as_str) {
                return id.to_owned();
            }
            assert!(
                Instant::now() < end,
                "no element {css} on {}: {v}",
                self.url()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Clicks the element matching `css` (a link or a submit button
    /// navigates; the command returns once the new page loaded).
    pub(crate) fn click(&self, css: &str) {
        let id = self.find(css);
        self.call(
            "POST",
            &self.s(&format!("/element/{id}/click")),
            Some(&json!({})),
        );
    }

    /// Clicks an element that leads to another page (a link, a submit
    /// button) and waits up to 10 s for that page to load: WebDriver's click
    /// may return before a form's submission has navigated.
    pub(crate) fn click_to_page(&self, css: &str) {
        let mark = "window.__wardOldPage = true; return true";
        self.script(mark);
        self.click(css);
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.try_call(
                "POST",
                &self.s("/execute/sync"),
                Some(&json!({
                    "script": "return !window.__wardOldPage && document.readyState === 'complete'",
                    "args": []
                })),
            );
            if v == Value::Bool(true) {
                return;
            }
            assert!(
                Instant::now() < end,
                "clicking {css} led to no new page: {v}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Types `text` into the element matching `css`.
    pub(crate) fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css);
        self.call(
            "POST",
            &self.s(&format!("/element/{id}/value")),
            Some(&json!({ "text": text })),
        );
    }

    /// The rendered text of the element matching `css`.
    pub(crate) fn text(&self, css: &str) -> String {
        let id = self.find(css);
        self.call("GET", &self.s(&format!("/element/{id}/text")), None)
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// An attribute of the element matching `css`.
    pub(crate) fn attribute(&self, css: &str, name: &str) -> Option<String> {
        let id = self.find(css);
        self.call(
            "GET",
            &self.s(&format!("/element/{id}/attribute/{name}")),
            None,
        )
        .as_str()
        .map(str::to_owned)
    }

    /// Runs a script in the page (WebDriver's own channel: the page's CSP
    /// does not apply to it) and returns its result.
    pub(crate) fn script(&self, script: &str) -> Value {
        self.call(
            "POST",
            &self.s("/execute/sync"),
            Some(&json!({ "script": script, "args": [] })),
        )
    }

    /// Presses keys (e.g. `"\u{E004}"`, Tab) in the focused element.
    pub(crate) fn keys(&self, keys: &str) {
        let actions: Vec<Value> = keys
            .chars()
            .flat_map(|c| {
                [
                    json!({"type": "keyDown", "value": c.to_string()}),
                    json!({"type": "keyUp", "value": c.to_string()}),
                ]
            })
            .collect();
        self.call(
            "POST",
            &self.s("/actions"),
            Some(&json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})),
        );
    }

    /// The browser's cookies for the current page.
    pub(crate) fn cookies(&self) -> Vec<Value> {
        self.call("GET", &self.s("/cookie"), None)
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Resizes the window.
    pub(crate) fn resize(&self, width: u32, height: u32) {
        self.call(
            "POST",
            &self.s("/window/rect"),
            Some(&json!({ "width": width, "height": height })),
        );
    }

    /// Writes a PNG of the viewport to `dir/NAME.png`.
    pub(crate) fn screenshot(&self, dir: &Path, name: &str) {
        let b64 = self.call("GET", &self.s("/screenshot"), None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.try_call("DELETE", &self.s(""), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Joins a chunked HTTP/1.1 body.
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = body.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&body[..eol]);
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        let rest = &body[eol + 2..];
        if n == 0 || rest.len() < n {
            break;
        }
        out.extend_from_slice(&rest[..n]);
        body = rest[n..].strip_prefix(b"\r\n").unwrap_or(&rest[n..]);
    }
    out
}
