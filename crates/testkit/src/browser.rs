//! A real browser for tests of the admin page: Debian's headless `chromium`, driven through
//! `chromedriver` over the W3C WebDriver protocol (plain JSON over HTTP on loopback), so no
//! browser is downloaded and no client library is needed. Screenshots go where the test says.

use std::{net::SocketAddr, path::Path, process::Command, time::Duration};

use base64::Engine;
use serde_json::{json, Value};

use crate::process::ChildGuard;

/// The key W3C WebDriver gives element references under.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver with one headless Chromium session.
pub struct Browser {
    driver: SocketAddr,
    session: String,
    _chromedriver: ChildGuard,
}

impl Browser {
    /// Starts chromedriver on a port it picks (output in `dir`) and opens a headless session
    /// of `width`×`height`.
    pub fn start(dir: &Path, width: u32, height: u32) -> Self {
        let mut command = Command::new("chromedriver");
        command.arg("--port=0");
        let guard = ChildGuard::spawn("chromedriver", command, dir);
        let port = crate::wait::until("chromedriver to start", Duration::from_secs(30), || {
            let text = guard.stdout();
            let line = text.lines().find(|l| l.contains("started successfully on port"))?;
            line.trim_end_matches('.').rsplit(' ').next()?.parse::<u16>().ok()
        });
        let driver = SocketAddr::from(([127, 0, 0, 1], port));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", format!("--window-size={width},{height}")],
            },
        }}});
        let created = call(driver, "POST", "/session", Some(&capabilities));
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
            .to_owned();
        Self { driver, session, _chromedriver: guard }
    }

    fn command(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        call(self.driver, method, &format!("/session/{}{path}", self.session), body)
    }

    pub fn goto(&self, url: &str) {
        self.command("POST", "/url", Some(&json!({ "url": url })));
    }

    /// Sets the window to `width`×`height` (a phone: 390×844).
    pub fn resize(&self, width: u32, height: u32) {
        self.command("POST", "/window/rect", Some(&json!({ "width": width, "height": height })));
    }

    /// Runs `script` (a function body; `arguments` as given) in the page and returns its value.
    pub fn eval(&self, script: &str, args: &[Value]) -> Value {
        self.command("POST", "/execute/sync", Some(&json!({ "script": script, "args": args })))
            ["value"]
            .clone()
    }

    /// Like [`Browser::eval`] for a script that calls `arguments[arguments.length - 1]` with
    /// its result when done (a `fetch`, say).
    pub fn eval_async(&self, script: &str) -> Value {
        self.command("POST", "/execute/async", Some(&json!({ "script": script, "args": [] })))
            ["value"]
            .clone()
    }

    /// The element `css` matches, once it exists (within `timeout`).
    pub fn find(&self, css: &str, timeout: Duration) -> String {
        crate::wait::until(&format!("an element matching {css:?}"), timeout, || {
            let found = self.command(
                "POST",
                "/element",
                Some(&json!({ "using": "css selector", "value": css })),
            );
            found["value"][ELEMENT].as_str().map(str::to_owned)
        })
    }

    /// Clicks the element `css` matches.
    pub fn click(&self, css: &str) {
        let element = self.find(css, Duration::from_secs(20));
        let clicked = self.command("POST", &format!("/element/{element}/click"), Some(&json!({})));
        assert!(clicked["value"].is_null(), "click on {css}: {clicked}");
    }

    /// Types `text` into the element `css` matches.
    pub fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css, Duration::from_secs(20));
        self.command("POST", &format!("/element/{element}/value"), Some(&json!({ "text": text })));
    }

    /// Accepts the `confirm()` dialog the page opened, once it is open.
    pub fn accept_dialog(&self) {
        crate::wait::until_true("a dialog to accept", Duration::from_secs(10), || {
            let answer = self.command("POST", "/alert/accept", Some(&json!({})));
            answer["value"].is_null()
        });
    }

    /// Waits until `condition` (a script returning true or false) holds in the page.
    pub fn wait_for(&self, what: &str, condition: &str, timeout: Duration) {
        let script = format!("return !!({condition});");
        crate::wait::until_true(&format!("{what} ({condition})"), timeout, || {
            self.eval(&script, &[]) == json!(true)
        });
    }

    /// Saves a PNG screenshot of the page to `path`.
    pub fn screenshot(&self, path: &Path) {
        let shot = self.command("GET", "/screenshot", None);
        let data = shot["value"].as_str().unwrap_or_else(|| panic!("no screenshot: {shot}"));
        let png = base64::engine::general_purpose::STANDARD.decode(data).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| {
            call(self.driver, "DELETE", &format!("/session/{}", self.session), None)
        });
    }
}

/// One WebDriver command; its JSON answer. The reply is read by its framing: chromedriver
/// keeps connections open.
fn call(driver: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Value {
    use std::io::Write;
    let body = body.map(Value::to_string).unwrap_or_default();
    let headers = [("Content-Type", "application/json; charset=utf-8")];
    let exchange = || {
        let mut stream = std::net::TcpStream::connect(driver).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(Duration::from_secs(120))).map_err(|e| e.to_string())?;
        stream
            .write_all(&crate::tls::request(method, path, &headers, body.as_bytes()))
            .map_err(|e| e.to_string())?;
        crate::tls::read_reply(&mut stream)
    };
    let reply = exchange().unwrap_or_else(|e| panic!("chromedriver {method} {path}: {e}"));
    serde_json::from_slice(&reply.body).unwrap_or_else(|e| {
        panic!("chromedriver {method} {path}: {} {e}: {}", reply.status, reply.text())
    })
}
