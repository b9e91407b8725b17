//! The GraphQL API at `/graphql` (async-graphql): the seeds' schema as an
//! adapter over the same [`Queue`] calls as REST, with the same access
//! policy, error codes (in `extensions.code`) and limits.
//!
//! Queries and mutations are served over POST at `/graphql`, with the
//! token in the `Authorization: Bearer` header (without a valid one the
//! request is answered 401 with the error in GraphQL's shape);
//! subscriptions, and queries and mutations too, over WebSocket at
//! `/graphql/ws` ([`socket`]), fed by the node's one follower of the event
//! hub ([`Live`]). GraphiQL is served on GET `/graphql` ([`graphiql`]).

mod graphiql;
mod live;
mod mutation;
mod observe;
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

/// Deepest introspection query accepted over POST: the standard one
/// (GraphiQL's) nests type references 13 levels deep.
pub const MAX_INTROSPECTION_DEPTH: usize = 15;

/// The schema with its limits over `live` (the queue comes with it);
/// with `introspection_only`, the one that answers nothing but
/// introspection, with room for its deeper nesting.
pub(crate) fn schema(config: &GraphqlConfig, live: Live, introspection_only: bool) -> TaskSchema {
    let builder = Schema::build(
        query::Query,
        mutation::Mutation,
        subscription::SubscriptionRoot,
    )
    .limit_complexity(MAX_COMPLEXITY)
    .data(live.inner.queue.clone())
    .data(live);
    if introspection_only {
        builder
            .limit_depth(MAX_INTROSPECTION_DEPTH)
            .introspection_only()
            .finish()
    } else if config.introspection {
        builder.limit_depth(MAX_DEPTH).finish()
    } else {
        builder
            .limit_depth(MAX_DEPTH)
            .disable_introspection()
            .finish()
    }
}

/// The node's schemas: the one every operation runs on, and (unless
/// introspection is off) one for introspection queries alone.
#[derive(Clone)]
pub(crate) struct Schemas {
    main: TaskSchema,
    introspection: Option<TaskSchema>,
    documents: Arc<observe::Documents>,
}

impl Schemas {
    fn new(config: &GraphqlConfig, live: Live) -> Self {
        Self {
            main: schema(config, live.clone(), false),
            introspection: config.introspection.then(|| schema(config, live, true)),
            documents: Arc::default(),
        }
    }

    /// The schema for `request`: an operation that selects only
    /// introspection fields (`__schema`, `__type`, `__typename`) runs on
    /// the introspection schema.
    fn for_request(&self, request: &mut async_graphql::Request) -> &TaskSchema {
        match &self.introspection {
            Some(introspection) if introspects_only(request) => introspection,
            _ => &self.main,
        }
    }
}

/// Whether the operation `request` runs selects introspection fields only
/// (fragments at its top level count as not).
fn introspects_only(request: &mut async_graphql::Request) -> bool {
    use async_graphql::parser::types::{DocumentOperations, Selection};
    let name = request.operation_name.clone();
    let Ok(doc) = request.parsed_query() else {
        return false;
    };
    let op = match (&doc.operations, name) {
        (DocumentOperations::Single(op), _) => Some(op),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name.as_str()),
        // One named operation, run without its name.
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops.values().next(),
        (DocumentOperations::Multiple(_), None) => None,
    };
    op.is_some_and(|op| {
        let items = &op.node.selection_set.node.items;
        !items.is_empty()
            && items.iter().all(|item| match &item.node {
                Selection::Field(f) => f.node.name.node.starts_with("__"),
                _ => false,
            })
    })
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
/// `/graphql/ws`, GraphiQL on GET `/graphql` with its files.
pub(crate) fn routes(state: &AppState) -> poem::Route {
    let schemas = Schemas::new(&state.config.graphql, state.graphql.clone());
    poem::Route::new()
        .at(
            PATH,
            poem::post(post).get(graphiql::page).data(schemas.clone()),
        )
        .at(
            WS_PATH,
            poem::get(socket::socket).data(observe::Observed(schemas.main, schemas.documents)),
        )
        .at("/graphql/assets/:file", poem::get(graphiql::asset))
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

/// Set on WebSocket connections: their operations are rate limited one by
/// one (a POST is limited as a request).
pub(super) struct Throttled(pub(super) Arc<AppState>);

/// An [`ApiError`] as a GraphQL error: its code in `extensions.code`.
fn api_error(e: &ApiError) -> async_graphql::Error {
    let code = e.code;
    async_graphql::Error::new(e.message.clone()).extend_with(|_, ext| ext.set("code", code))
}

/// The rate limit for one operation over WebSocket (nothing over POST,
/// whose request was counted).
async fn throttle(
    data: Option<&Throttled>,
    principal: Option<&Principal>,
) -> async_graphql::Result<()> {
    let (Some(Throttled(state)), Some(principal)) = (data, principal) else {
        return Ok(());
    };
    state
        .limiter
        .check(state.queue.store(), &principal.sub)
        .await
        .map_err(|e| api_error(&e))
}

/// `POST /graphql`.
#[handler]
pub(super) async fn post(
    Data(state): Data<&Arc<AppState>>,
    Data(schemas): Data<&Schemas>,
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
        return refusal(&e);
    }
    let mut request = req
        .0
        .data(principal)
        .data(types::AgentsOnce(tokio::sync::OnceCell::new()));
    schemas.documents.prepare(&mut request);
    let schema = schemas.for_request(&mut request);
    GraphQLResponse(observe::execute(schema, request).await).into_response()
}

/// A request refused before it ran: its status, the error in GraphQL's
/// shape.
fn refusal(e: &ApiError) -> Response {
    let body = serde_json::json!({
        "errors": [{"message": e.message, "extensions": {"code": e.code}}]
    });
    let mut resp = poem::web::Json(body).with_status(e.status).into_response();
    if let Some(s) = e.retry_after_s
        && let Ok(v) = poem::http::HeaderValue::from_str(&s.to_string())
    {
        resp.headers_mut()
            .insert(poem::http::header::RETRY_AFTER, v);
    }
    resp
}
