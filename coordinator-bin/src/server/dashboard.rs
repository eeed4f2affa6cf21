//! The operator dashboard: one self-contained HTML page (no CDN, no external
//! fonts) that polls `/api/dashboard/state` every five seconds.

/// The page.
pub const PAGE: &str = include_str!("dashboard.html");
