//! The web UI: static files embedded in the binary (`crates/ferrymq-http/ui/`, plain
//! HTML, CSS and JavaScript, no build step, nothing fetched at run time) served at `/`
//! on the management port. The UI is a client of the JSON API only (`/api/…` with basic
//! auth from its login form); the server side is these few routes and one layer that
//! leaves out the `WWW-Authenticate` challenge for the UI's own requests (marked
//! `X-Requested-With: XMLHttpRequest`, as RabbitMQ's UI does) so that a wrong password
//! shows the UI's login form again instead of the browser's own credentials dialog.

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::AppState;

/// One embedded file: its path under `/`, its content type and its bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../ui/index.html"),
    },
    Asset {
        path: "/ui/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../ui/app.css"),
    },
    Asset {
        path: "/ui/core.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../ui/core.js"),
    },
    Asset {
        path: "/ui/pages.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../ui/pages.js"),
    },
    Asset {
        path: "/ui/admin.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../ui/admin.js"),
    },
    Asset {
        path: "/ui/kafka.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../ui/kafka.js"),
    },
    Asset {
        path: "/favicon.ico",
        content_type: "image/svg+xml",
        body: include_bytes!("../ui/favicon.svg"),
    },
];

/// Scripts only from this origin, no inline script, no plugins, not framed: with every
/// user-controlled string escaped by the UI this is the second line against XSS.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self'; object-src 'none'; \
                   frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

fn serve(asset: &'static Asset) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        asset.body,
    )
        .into_response()
}

/// The UI's routes (`/`, `/index.html`, `/ui/*`, `/favicon.ico`).
pub fn router() -> Router<AppState> {
    let mut r = Router::new().route("/index.html", get(|| async { serve(&ASSETS[0]) }));
    for asset in ASSETS {
        r = r.route(asset.path, get(move || async move { serve(asset) }));
    }
    r
}

/// Drops the `WWW-Authenticate` challenge from 401s answered to the UI's own requests.
pub async fn no_challenge_for_ui(req: Request, next: Next) -> Response {
    let from_ui = req
        .headers()
        .get("x-requested-with")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"XMLHttpRequest"));
    let mut res = next.run(req).await;
    if from_ui {
        res.headers_mut().remove(header::WWW_AUTHENTICATE);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_embedded_and_referenced() {
        let index = std::str::from_utf8(ASSETS[0].body).unwrap();
        for a in &ASSETS[1..] {
            assert!(!a.body.is_empty(), "{} is empty", a.path);
            if a.path.ends_with(".js") || a.path.ends_with(".css") {
                assert!(
                    index.contains(a.path),
                    "index.html does not load {}",
                    a.path
                );
            }
        }
        // No script may come from elsewhere (nothing fetched at run time).
        assert!(!index.contains("http://") && !index.contains("https://"));
    }
}
