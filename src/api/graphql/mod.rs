//! The GraphQL API at `/graphql` (async-graphql): the seeds' schema as an
//! adapter over the same [`Queue`] calls as REST, with the same access
//! policy, error codes (in `extensions.code`) and limits.
//!
//! Queries and mutations are served over POST at `/graphql`, with the
//! token in the `Authorization: Bearer` header (without a valid one the
//! request is answered 401 with the error in GraphQL's shape);
//! subscriptions, and queries and mutations too, over WebSocket at
//! `/graphql/ws` ([`socket`]), fed by the node's one follower of the event
//! hub ([`Live`]).

mod extension;
mod live;
mod mutation;
mod query;
mod socket;
mod subscription;
mod types;

use std::sync::Arc;

use async_graphql::{ErrorExtensions, Schema};
use async_graphql_poem::{GraphQLRequest, GraphQLResponse};
use poem::web::Data;
use poem::{EndpointExt, IntoResponse, Response, handler};

use crate::api::AppState;
use crate::api::error::ApiError;
use crate::auth::Principal;
use crate::queue::Queue;

/// Where GraphQL is served.
pub const PATH: &str = "/graphql";
/// Deepest query accepted.
pub const MAX_DEPTH: usize = 10;
/// Most complex query accepted (one point per field).
pub const MAX_COMPLEXITY: usize = 1_000;

pub use live::Live;
pub use socket::WS_PATH;

/// GraphQL's settings.
#[derive(Clone, Debug)]
pub struct GraphqlConfig {
    /// Whether `__schema` and `__type` are answered (GraphiQL needs them).
    pub introspection: bool,
}

impl Default for GraphqlConfig {
    fn default() -> Self {
        Self {
            introspection: true,
        }
    }
}

/// The schema.
pub(crate) type TaskSchema =
    Schema<query::Query, mutation::Mutation, subscription::SubscriptionRoot>;

/// The schema with its limits over `live` (the queue comes with it).
pub(crate) fn schema(config: &GraphqlConfig, live: Live) -> TaskSchema {
    let builder = Schema::build(
        query::Query,
        mutation::Mutation,
        subscription::SubscriptionRoot,
    )
    .limit_depth(MAX_DEPTH)
    .limit_complexity(MAX_COMPLEXITY)
    .extension(extension::Observe)
    .data(live.inner.queue.clone())
    .data(live);
    if config.introspection {
        builder.finish()
    } else {
        builder.disable_introspection().finish()
    }
}

/// The schema in SDL (the repository's `schema.graphql` is this).
pub fn sdl() -> String {
    Schema::build(
        query::Query,
        mutation::Mutation,
        subscription::SubscriptionRoot,
    )
    .finish()
    .sdl()
}

/// The GraphQL routes over `state`: POST `/graphql`, the WebSocket at
/// `/graphql/ws`.
pub(crate) fn routes(state: &AppState) -> poem::Route {
    let schema = schema(&state.config.graphql, state.graphql.clone());
    poem::Route::new()
        .at(PATH, poem::post(post).data(schema.clone()))
        .at(WS_PATH, poem::get(socket::socket).data(schema))
}

fn caller<'a>(ctx: &async_graphql::Context<'a>) -> async_graphql::Result<&'a Principal> {
    ctx.data::<Principal>()
}

fn service<'a>(ctx: &async_graphql::Context<'a>) -> &'a Queue {
    ctx.data_unchecked::<Queue>()
}

/// A service error as a GraphQL error: the REST code in
/// `extensions.code`, the REST message, no internal cause.
fn error(e: crate::Error) -> async_graphql::Error {
    let api = ApiError::from(e);
    async_graphql::Error::new(api.message.clone()).extend_with(|_, ext| {
        ext.set("code", api.code);
        if let Some(details) = &api.details
            && let Ok(v) = async_graphql::Value::from_json(details.clone())
        {
            ext.set("details", v);
        }
    })
}

/// `POST /graphql`.
#[handler]
pub(super) async fn post(
    Data(state): Data<&Arc<AppState>>,
    Data(schema): Data<&TaskSchema>,
    headers: &poem::http::HeaderMap,
    req: GraphQLRequest,
) -> Response {
    let token = headers
        .get(poem::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let verified = match token {
        None => Err(ApiError::from(crate::auth::AuthError::Missing)),
        Some(t) => state.auth.verify(t.trim()).map_err(ApiError::from),
    };
    let principal = match verified {
        Ok(p) => p,
        Err(e) => return refusal(&e),
    };
    if let Err(e) = state
        .limiter
        .check(state.queue.store(), &principal.sub)
        .await
    {
        return e.to_response();
    }
    let request = req
        .0
        .data(principal)
        .data(types::AgentsOnce(tokio::sync::OnceCell::new()));
    GraphQLResponse(schema.execute(request).await).into_response()
}

/// A request refused before it ran: its status, the error in GraphQL's
/// shape.
fn refusal(e: &ApiError) -> Response {
    let body = serde_json::json!({
        "errors": [{"message": e.message, "extensions": {"code": e.code}}]
    });
    poem::web::Json(body).with_status(e.status).into_response()
}
