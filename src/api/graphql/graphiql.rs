//! GraphiQL in the browser at `GET /graphql`, its files built into the
//! binary (`assets/graphiql/`): no internet needed. The page asks for a
//! token and keeps it for the tab only; it holds no data itself, so it is
//! served without one, like the REST docs.

use poem::http::{StatusCode, header};
use poem::web::Path;
use poem::{IntoResponse, Response, handler};

use crate::api::error::ApiError;

macro_rules! asset {
    ($name:literal, $type:expr) => {
        (
            $name,
            $type,
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/assets/graphiql/",
                $name
            )) as &[u8],
        )
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The page's files: name, content type, bytes.
const FILES: [(&str, &str, &[u8]); 7] = [
    asset!("graphiql.min.js", JS),
    asset!("graphiql.min.css", CSS),
    asset!("react.production.min.js", JS),
    asset!("react-dom.production.min.js", JS),
    asset!("graphql-ws.min.js", JS),
    asset!("explorer.js", JS),
    asset!("explorer.css", CSS),
];

const PAGE: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/graphiql/index.html"
));

/// Scripts and styles from this node only; GraphiQL sets inline styles and
/// its fonts and icons are data URLs.
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; font-src 'self' data:; connect-src 'self' ws: wss:; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// `GET /graphql`: the GraphiQL page.
#[handler]
pub(super) fn page() -> Response {
    PAGE.with_content_type("text/html; charset=utf-8")
        .with_header(header::CACHE_CONTROL, "no-cache")
        .with_header(header::CONTENT_SECURITY_POLICY, POLICY)
        .with_header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .into_response()
}

/// `GET /graphql/assets/:file`: one of the page's files.
#[handler]
pub(super) fn asset(Path(file): Path<String>) -> Response {
    match FILES.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, bytes)) => bytes
            .with_content_type(*content_type)
            .with_header(header::CACHE_CONTROL, "public, max-age=3600")
            .with_header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
            .into_response(),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("no GraphiQL file {file}"),
        )
        .to_response(),
    }
}
