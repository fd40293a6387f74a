//! `GET /ui`: the dashboard, one HTML page with its CSS and JavaScript
//! inline, compiled into the binary. It loads nothing from elsewhere (its
//! Content-Security-Policy forbids it) and polls this node's JSON endpoints:
//! `/v1/status` (the node, its quorum, size and the data plane) and
//! `/v1/members` (every member as the leader sees it).

use axum::http::header;
use axum::response::IntoResponse;

/// The page.
pub const DASHBOARD_HTML: &str = include_str!("../ui/dashboard.html");

/// Only this node's own resources: the inline script and style, and fetches
/// back to the same origin.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'";

/// `GET /ui`.
#[utoipa::path(
    get,
    path = "/ui",
    tag = "status",
    responses((status = 200, description = "the dashboard: one HTML page that polls `/v1/status` and `/v1/members`", content_type = "text/html", body = String))
)]
pub async fn dashboard() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
        ],
        DASHBOARD_HTML,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for external in ["http://", "https://", "//cdn", "<link", "src=\""] {
            assert!(
                !DASHBOARD_HTML.contains(external),
                "the dashboard refers to {external:?}"
            );
        }
        for endpoint in ["/v1/status", "/v1/members"] {
            assert!(DASHBOARD_HTML.contains(endpoint));
        }
    }
}
