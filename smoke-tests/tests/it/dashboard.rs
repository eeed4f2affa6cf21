//! The dashboard in a real browser: what it shows, and what an operator does
//! with it (find, open, cancel, retry, drain), seen arriving live over the
//! event stream. Screenshots of each state go to `target/test-artefacts/`.

use std::time::Duration;

use serde_json::{json, Value};
use smoke_tests::harness::{wait_for, Coordinator};
use smoke_tests::http::Client;

use crate::agents::{submit, task, wait_status};
use crate::browser::Browser;
use crate::sim::{Behaviour, SimAgent};

const WAIT: Duration = Duration::from_secs(15);

fn css_str(s: &str) -> String {
    json!(s).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_finds_opens_and_cancels_a_task_live() {
    let c = Coordinator::start(&[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let _holder = SimAgent::start(&c, "holder", &["hold"], Behaviour::Hold).await;
    let _quick = SimAgent::start(&c, "quick", &["quick"], Behaviour::Complete).await;
    let done = submit(
        &mut admin,
        json!({"description": "quick one", "needed_capabilities": ["quick"]}),
    )
    .await;
    wait_status(&mut admin, &done, "completed", WAIT).await;
    let held = submit(
        &mut admin,
        json!({"description": "held forever", "needed_capabilities": ["hold"], "metadata": {"ticket": 42}}),
    )
    .await;
    wait_status(&mut admin, &held, "working", WAIT).await;
    for i in 0..3 {
        submit(&mut admin, json!({"description": format!("waits {i}"), "priority": "high", "needed_capabilities": ["nobody-has-this"]})).await;
    }

    let b = Browser::start().await;
    b.client
        .goto(&format!(
            "http://{}/dashboard?token={}",
            c.addr, c.admin_token
        ))
        .await
        .unwrap();
    // What the page shows: agents, lanes, unroutable tasks, recent completions.
    b.find(".card[data-agent=\"holder\"][data-state=\"working\"]")
        .await;
    b.find(".card[data-agent=\"quick\"]").await;
    b.until_text("#lane-high", "3").await;
    b.until_text("#unroutable-count", "3").await;
    let unroutable = b.text_of("#unroutable-rows").await;
    assert!(unroutable.contains("nobody-has-this"), "{unroutable}");
    b.until(
        "the recent completion",
        "return document.getElementById('recent').textContent.includes('quick one');",
    )
    .await;
    b.until_text("#live-status", "live").await;
    let leaks = b
        .eval(&format!(
            "return location.href.includes({0}) || document.documentElement.outerHTML.includes({0});",
            css_str(&c.admin_token)
        ))
        .await;
    assert_eq!(leaks, json!(false), "the token is not left in the page");
    b.screenshot_at("body", "overview").await;

    // Find the task by a prefix of its description.
    b.find("#search").await.send_keys("held for").await.unwrap();
    b.until(
        "the search to leave one row",
        &format!(
            "const r = [...document.querySelectorAll('#tasks tbody tr')]; return r.length === 1 && r[0].dataset.task === {};",
            css_str(&held)
        ),
    )
    .await;
    b.screenshot_at("#filters", "search").await;

    // Open it.
    b.click(&format!("#tasks tr[data-task={}]", css_str(&held)))
        .await;
    b.until_text("#detail-id", &held).await;
    b.until_text("#detail-status", "working").await;
    b.until_text("#detail-agent", "holder").await;
    let history = b.text_of("#detail-history").await;
    assert!(
        history.contains("submitted") && history.contains("accepted"),
        "{history}"
    );
    assert!(b.text_of("#detail-metadata").await.contains("42"));
    b.screenshot_at("#detail-section", "detail").await;

    // Cancel it: asked first, then the change arrives over the stream.
    b.click("#btn-cancel").await;
    b.confirm().await;
    b.until_text("#detail-status", "cancelled").await;
    b.until_text(
        &format!("#tasks tr[data-task={}] td.status", css_str(&held)),
        "cancelled",
    )
    .await;
    assert_eq!(task(&mut admin, &held).await["status"], "cancelled");
    b.screenshot_at("#detail-section", "cancelled").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_retries_dead_letters_and_drains_an_agent() {
    let c = Coordinator::start(&[]);
    let mut admin = Client::new(&c.addr, Some(&c.admin_token));
    let failer = SimAgent::start(&c, "failer", &["flaky"], Behaviour::Fail).await;
    let worker = SimAgent::start(&c, "worker", &["special"], Behaviour::Complete).await;
    let mut dead = Vec::new();
    for i in 0..2 {
        let id = submit(
            &mut admin,
            json!({"description": format!("flaky {i}"), "needed_capabilities": ["flaky"], "max_retries": 0}),
        )
        .await;
        wait_status(&mut admin, &id, "dead_letter", WAIT).await;
        dead.push(id);
    }
    // Retried tasks stay queued: nobody can take them any more.
    failer.kill();
    wait_for(WAIT, "the failing agent to go offline", || {
        let mut admin = Client::new(&c.addr, Some(&c.admin_token));
        async move {
            let agent = admin.get("/api/agents/failer").await.ok()?.body;
            (agent["connected"] == json!(false)).then_some(())
        }
    })
    .await;

    let b = Browser::start().await;
    b.client
        .goto(&format!(
            "http://{}/dashboard?token={}",
            c.addr, c.admin_token
        ))
        .await
        .unwrap();
    b.until_text("#live-status", "live").await;
    b.click("#tab-dead").await;
    b.until_text("#dead-count", "2").await;
    b.until("both dead letters listed", "return document.querySelectorAll('#tasks tbody tr[data-status=\"dead_letter\"]').length === 2;").await;
    b.screenshot_at("#filters", "dead-letter").await;

    // Retry one from its detail panel.
    b.click(&format!("#tasks tr[data-task={}]", css_str(&dead[0])))
        .await;
    b.until_text("#detail-status", "dead_letter").await;
    b.click("#btn-retry").await;
    b.confirm().await;
    b.until_text("#detail-status", "queued").await;
    assert_eq!(task(&mut admin, &dead[0]).await["status"], "queued");
    // The dead-letter view follows: one left.
    b.until("one dead letter left", &format!(
        "const r = [...document.querySelectorAll('#tasks tbody tr')]; return r.length === 1 && r[0].dataset.task === {};",
        css_str(&dead[1])
    )).await;
    b.screenshot_at("#detail-section", "retried").await;

    // Retry all the rest.
    b.click("#retry-all").await;
    b.confirm().await;
    b.until(
        "an empty dead letter",
        "return document.querySelectorAll('#tasks tbody tr').length === 0;",
    )
    .await;
    assert_eq!(task(&mut admin, &dead[1]).await["status"], "queued");
    b.until_text("#unroutable-count", "2").await;

    // Drain the worker: asked first; its card says so.
    let card = |state: &str| format!(".card[data-agent=\"worker\"][data-drained=\"{state}\"]");
    b.click(&format!("{} button.drain", card("false"))).await;
    b.confirm().await;
    b.find(&card("true")).await;
    let agent = admin.get("/api/agents/worker").await.unwrap().body;
    assert_eq!(agent["drained"], json!(true), "{agent}");
    b.screenshot_at("#agents", "drained").await;

    // Work only the drained agent could do is not given to it: it waits,
    // flagged unroutable, while the agent stays idle.
    let special = submit(
        &mut admin,
        json!({"description": "needs the drained one", "needed_capabilities": ["special"]}),
    )
    .await;
    b.until_text("#unroutable-count", "3").await;
    let t: Value = task(&mut admin, &special).await;
    assert_eq!(t["status"], "queued", "{t}");
    assert_eq!(t["generation"], 0, "never assigned: {t}");
    assert!(worker.completed().is_empty());
    b.screenshot_at("body", "drained-unroutable").await;

    // Undrain: the task goes to it at once.
    b.click(&format!("{} button.undrain", card("true"))).await;
    b.confirm().await;
    b.find(&card("false")).await;
    wait_status(&mut admin, &special, "completed", WAIT).await;
    b.until(
        "the worker's count",
        "const c = document.querySelector('.card[data-agent=\"worker\"] .counts'); return !!c && c.textContent.startsWith('done 1');",
    )
    .await;
    b.screenshot_at("#agents", "undrained").await;
    let completed: Vec<String> = worker.completed().into_iter().map(|d| d.task_id).collect();
    assert_eq!(completed, vec![special]);
    b.close().await;
}
