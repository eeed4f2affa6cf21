//! The operator dashboard: one self-contained HTML page (no CDN, no external
//! fonts, works without internet) that reads `/api/dashboard/state` and the
//! task routes, follows `/api/events` live, and acts through the API (cancel,
//! retry, drain). Its charts use uPlot, vendored unchanged with its MIT licence
//! in `dashboard/` and inlined into the page.

use std::sync::LazyLock;

const TEMPLATE: &str = include_str!("dashboard/page.html");
const UPLOT_JS: &str = include_str!("dashboard/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("dashboard/uPlot.min.css");
const UPLOT_LICENSE: &str = include_str!("dashboard/uPlot.LICENSE");

/// The page, with uPlot, its stylesheet and its licence inlined.
pub static PAGE: LazyLock<String> = LazyLock::new(|| {
    TEMPLATE
        .replacen("/*UPLOT_CSS*/", UPLOT_CSS, 1)
        .replacen("/*UPLOT_LICENSE*/", &format!("{UPLOT_LICENSE}\n*/"), 1)
        .replacen("/*UPLOT_JS*/", UPLOT_JS, 1)
});

#[cfg(test)]
mod tests;
