//! The GraphQL API at `/graphql` (async-graphql): the seeds' schema as an
//! adapter over the same [`Queue`] calls as REST, with the same access
//! policy, error codes (in `extensions.code`) and limits.
//!
//! This step serves over POST the queries `aiTask`, `aiTasks`,
//! `taskQueueStatus`, `taskStatistics` and the submitters' mutations
//! `createAITask`, `createAITasksBatch`, `cancelAITask`, `retryAITask` (the
//! worker and admin mutations, subscriptions and GraphiQL follow).
//! The token is the `Authorization: Bearer` header; without a valid one
//! the request is answered 401 with the error in GraphQL's shape.

mod mutation;
mod query;
mod types;

use std::sync::Arc;

use async_graphql::{EmptySubscription, ErrorExtensions, Schema};
use async_graphql_poem::{GraphQLRequest, GraphQLResponse};
use poem::web::Data;
use poem::{IntoResponse, Response, handler};

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

/// The schema.
pub(crate) type TaskSchema = Schema<query::Query, mutation::Mutation, EmptySubscription>;

/// The schema with its limits; the queue comes with each request.
pub(crate) fn schema() -> TaskSchema {
    Schema::build(query::Query, mutation::Mutation, EmptySubscription)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .finish()
}

/// The schema in SDL (the repository's `schema.graphql` is this).
pub fn sdl() -> String {
    schema().sdl()
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
    let mut request = req
        .0
        .data(principal)
        .data(state.queue.clone())
        .data(types::AgentsOnce(tokio::sync::OnceCell::new()));
    let kind = operation_kind(&mut request);
    let response = schema.execute(request).await;
    crate::metrics::graphql_operation(kind, response.is_ok());
    GraphQLResponse(response).into_response()
}

/// A request refused before it ran: its status, the error in GraphQL's
/// shape.
fn refusal(e: &ApiError) -> Response {
    let body = serde_json::json!({
        "errors": [{"message": e.message, "extensions": {"code": e.code}}]
    });
    poem::web::Json(body).with_status(e.status).into_response()
}

/// Whether a request is a query or a mutation (for the metrics). The
/// parsed document stays in the request: the schema does not parse it
/// again. A request that does not parse counts as a query.
fn operation_kind(request: &mut async_graphql::Request) -> &'static str {
    use async_graphql::parser::types::{DocumentOperations, OperationType};
    let name = request.operation_name.clone();
    let Ok(doc) = request.parsed_query() else {
        return "query";
    };
    let ty = match (&doc.operations, name) {
        (DocumentOperations::Single(op), _) => Some(op.node.ty),
        (DocumentOperations::Multiple(ops), Some(name)) => {
            ops.get(name.as_str()).map(|op| op.node.ty)
        }
        (DocumentOperations::Multiple(ops), None) => ops.values().next().map(|op| op.node.ty),
    };
    match ty {
        Some(OperationType::Mutation) => "mutation",
        Some(OperationType::Subscription) => "subscription",
        _ => "query",
    }
}
