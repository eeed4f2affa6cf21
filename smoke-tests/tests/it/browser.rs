//! A headless Chromium driven through chromedriver (Debian's `chromium` and
//! `chromium-driver`, installed by `scripts/ensure-chromium.sh` when missing)
//! with `fantoccini`, for the dashboard tests; screenshots go to the test
//! artefacts folder under `target/`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};
use smoke_tests::harness::{artefact_dir, TempDir};

/// How long a test waits for something to appear on the page.
pub const PAGE_WAIT: Duration = Duration::from_secs(15);

/// A chromedriver process and one browser session on it; both end on drop.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: TempDir,
}

/// Installs chromium and chromedriver if they are missing (needs root).
fn ensure_chromium() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/ensure-chromium.sh");
    let status = Command::new("bash")
        .arg(script)
        .status()
        .expect("run ensure-chromium.sh");
    assert!(
        status.success(),
        "chromium and chromedriver are needed for this test and could not be installed"
    );
}

/// Starts chromedriver on a port of its choosing and returns it with that port.
fn start_driver() -> (Child, u16) {
    let mut driver = Command::new("chromedriver")
        .args(["--port=0", "--allowed-ips=127.0.0.1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let stdout = driver.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // "ChromeDriver was started successfully on port 12345."
            if let Some(rest) = line.split("started successfully on port ").nth(1) {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                let _ = tx.send(digits.parse::<u16>().ok());
            }
        }
    });
    let port = rx
        .recv_timeout(Duration::from_secs(20))
        .ok()
        .flatten()
        .unwrap_or_else(|| {
            let _ = driver.kill();
            panic!("chromedriver did not say which port it listens on");
        });
    (driver, port)
}

impl Browser {
    /// A fresh headless browser with its own profile.
    pub async fn start() -> Browser {
        ensure_chromium();
        let (mut driver, port) = start_driver();
        let profile = TempDir::new("chromium-profile");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--window-size=1360,1100",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("waiting for chromedriver: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    let _ = driver.kill();
                    panic!("no browser session: {e}");
                }
            }
        };
        Browser {
            client,
            driver,
            _profile: profile,
        }
    }

    /// The element `css` once it exists.
    pub async fn find(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(PAGE_WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element `{css}` on the page: {e}"))
    }

    /// Clicks `css` once it exists.
    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("cannot click `{css}`: {e}"));
    }

    /// Clicks the dialog's "Yes" once the dialog shows.
    pub async fn confirm(&self) {
        self.until(
            "the confirmation dialog",
            "return document.getElementById('confirm-dialog').open;",
        )
        .await;
        self.click("#confirm-yes").await;
    }

    /// Runs `script` (a function body) in the page.
    pub async fn eval(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Waits until `script` returns something truthy, and returns it.
    pub async fn until(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            let value = self.eval(script).await;
            let truthy = !matches!(&value, Value::Null | Value::Bool(false))
                && value != json!("")
                && value != json!(0);
            if truthy {
                return value;
            }
            if Instant::now() > deadline {
                let shot = self.screenshot(&format!("timeout-{}", slug(what))).await;
                panic!(
                    "timed out waiting for {what} (last value {value}); page in {}",
                    shot.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The text of `css`, or `""` when it is not there.
    pub async fn text_of(&self, css: &str) -> String {
        let script = format!(
            "const e = document.querySelector({}); return e ? e.textContent : '';",
            json!(css)
        );
        self.eval(&script).await.as_str().unwrap_or("").to_owned()
    }

    /// Waits until the text of `css` is `expected`.
    pub async fn until_text(&self, css: &str, expected: &str) {
        let script = format!(
            "const e = document.querySelector({}); return !!e && e.textContent === {};",
            json!(css),
            json!(expected)
        );
        self.until(&format!("`{css}` to read `{expected}`"), &script)
            .await;
    }

    /// Scrolls `css` to the top of the window, then saves a screenshot as
    /// `dashboard-NAME.png` in the artefacts folder.
    pub async fn screenshot_at(&self, css: &str, name: &str) -> std::path::PathBuf {
        let script = format!(
            "const e = document.querySelector({}); if (e) e.scrollIntoView({{block: 'start'}}); return true;",
            json!(css)
        );
        self.eval(&script).await;
        self.screenshot(name).await
    }

    /// Saves a screenshot as `dashboard-NAME.png` in the artefacts folder.
    pub async fn screenshot(&self, name: &str) -> std::path::PathBuf {
        let path = artefact_dir().join(format!("dashboard-{name}.png"));
        match self.client.screenshot().await {
            Ok(png) => {
                let _ = std::fs::write(&path, png);
                eprintln!("screenshot: {}", path.display());
            }
            Err(e) => eprintln!("no screenshot {name}: {e}"),
        }
        path
    }

    /// Ends the session and chromedriver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Chromedriver takes its browser down with it.
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn slug(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect()
}
