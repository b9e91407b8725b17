//! Who may call what over REST: refused tokens, the routes that need none, a
//! role matrix over every operation of the live spec, task ownership between
//! users, and the binding of worker tokens to one agent.
//!
//! Every test runs a node without workers (tasks stay where the API puts
//! them) on its own redis-server, and talks to it over HTTP only.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use taskherd::auth::{AuthConfig, Role};
use taskherd::clock::Clock;
use taskherd::node::NodeConfig;
use taskherd::worker::Registry;

use crate::support::*;

/// Put in every task's inputData: no refusal may echo it.
const INPUT_MARKER: &str = "auth-matrix-private-input";

/// A well-formed task id that no task has.
const UNKNOWN_TASK_ID: &str = "task_01ARZ3NDEKTSV4RRFFQ69G5FAV";

// ---------------------------------------------------------------- HTTP

/// One node's REST API over reqwest.
struct Api {
    client: reqwest::Client,
    base: String,
}

/// A response, read whole.
struct Answer {
    /// "METHOD path", for messages.
    what: String,
    status: StatusCode,
    request_id: Option<String>,
    text: String,
}

impl Api {
    fn new(node: &TestNode) -> Self {
        Self {
            client: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .expect("http client"),
            base: node.url(""),
        }
    }

    /// A request with `Authorization: Bearer <token>` when a token is given.
    fn request(&self, method: Method, path: &str, bearer: Option<&str>) -> RequestBuilder {
        let req = self.client.request(method, format!("{}{path}", self.base));
        match bearer {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    async fn send(what: String, req: RequestBuilder) -> Answer {
        let resp = req.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = resp.status();
        let request_id = resp
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp.text().await.expect("response body");
        Answer {
            what,
            status,
            request_id,
            text,
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        let what = format!("{method} {path}");
        let mut req = self.request(method, path, bearer);
        if let Some(body) = body {
            req = req.json(body);
        }
        Self::send(what, req).await
    }

    async fn get(&self, path: &str, bearer: &str) -> Answer {
        self.call(Method::GET, path, Some(bearer), None).await
    }

    /// GET with a raw `Authorization` header (or none).
    async fn get_with_authorization(&self, path: &str, authorization: Option<&str>) -> Answer {
        let mut req = self.request(Method::GET, path, None);
        if let Some(value) = authorization {
            req = req.header("authorization", value);
        }
        Self::send(format!("GET {path}"), req).await
    }

    /// Creates an echo-style task for `agent` as `bearer`; returns the task.
    async fn create_task(&self, bearer: &str, agent: &str, priority: &str) -> Value {
        self.call(
            Method::POST,
            "/api/ai/tasks",
            Some(bearer),
            Some(&task_body(agent, priority)),
        )
        .await
        .expect_status(201)
    }

    /// Claims one task of `agent` as `bearer`; returns (id, lease token).
    async fn claim_one(&self, bearer: &str, agent: &str) -> (String, String) {
        let claimed = self
            .call(
                Method::POST,
                &format!("/api/ai/agents/{agent}/claim"),
                Some(bearer),
                Some(&json!({"maxTasks": 1})),
            )
            .await
            .expect_status(200);
        let task = &claimed["tasks"][0];
        (str_of(&task["id"]), str_of(&task["token"]))
    }
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    /// Asserts the status and returns the JSON body (Null when empty).
    fn expect_status(self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "{}: unexpected status; body: {}",
            self.what,
            self.text
        );
        self.json()
    }

    /// The error code of an error body, if the body is one.
    fn error_code(&self) -> Option<String> {
        self.json()["error"]["code"].as_str().map(str::to_string)
    }

    /// Status and code: what must not tell "not yours" from "no such task".
    fn refusal_shape(&self) -> (u16, Option<String>, Vec<String>) {
        let keys = self.json()["error"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        (self.status.as_u16(), self.error_code(), keys)
    }

    /// Checks a refusal: status, the one error body with `code` and a
    /// message, a request id, and nothing of any task in the body.
    fn check_refusal(&self, status: u16, code: &str) -> Result<(), String> {
        let mut problems = Vec::new();
        if self.status.as_u16() != status {
            problems.push(format!("status {} (expected {status})", self.status));
        }
        let body = self.json();
        if body["error"]["code"] != json!(code) {
            problems.push(format!("error.code is not {code}"));
        }
        if body["error"]["message"].as_str().is_none_or(str::is_empty) {
            problems.push("no error.message".into());
        }
        if self.request_id.is_none() {
            problems.push("no x-request-id header".into());
        }
        for leak in ["inputData", "ownerId", INPUT_MARKER] {
            if self.text.contains(leak) {
                problems.push(format!("body leaks {leak}"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{}: {}; body: {}",
                self.what,
                problems.join(", "),
                self.text
            ))
        }
    }

    fn assert_refused(&self, status: u16, code: &str) {
        if let Err(e) = self.check_refusal(status, code) {
            panic!("{e}");
        }
    }
}

fn str_of(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v}"))
        .to_string()
}

fn task_body(agent: &str, priority: &str) -> Value {
    json!({
        "agentId": agent,
        "taskType": "auth-test",
        "priority": priority,
        "inputData": {"marker": INPUT_MARKER},
    })
}

/// Ids of the tasks of a list answer.
fn listed_ids(page: &Value) -> BTreeSet<String> {
    page["tasks"]
        .as_array()
        .expect("tasks array")
        .iter()
        .map(|t| str_of(&t["id"]))
        .collect()
}

async fn start_node(config: NodeConfig) -> (TestNode, Api) {
    let node = TestNode::start(config, Registry::new()).await;
    let api = Api::new(&node);
    (node, api)
}

// ---------------------------------------------------------------- tokens

fn unix_now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// Signs `claims` as they are, with `alg` and `secret`.
fn sign(alg: Algorithm, secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("token signs")
}

/// `Bearer <token>` for `claims` signed with `alg` and `secret`.
fn bearer(alg: Algorithm, secret: &str, claims: &Value) -> String {
    format!("Bearer {}", sign(alg, secret, claims))
}

/// base64url without padding (RFC 7515 section 2).
fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// A token with header `{"alg":"none","typ":"JWT"}` and an empty signature.
fn unsigned_token(claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(claims.to_string().as_bytes())
    )
}

/// Claims a user token would carry, valid for an hour.
fn user_claims(sub: &str) -> Value {
    let now = unix_now_s();
    json!({"sub": sub, "role": "user", "iat": now, "exp": now + 3600})
}

fn without(mut claims: Value, field: &str) -> Value {
    claims.as_object_mut().expect("claims object").remove(field);
    claims
}

fn with(mut claims: Value, field: &str, value: Value) -> Value {
    claims[field] = value;
    claims
}

// ---------------------------------------------------------------- 1. tokens

#[tokio::test]
async fn defective_tokens_are_refused_with_401_and_the_error_body() {
    assert_eq!(
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0",
        "the base64url helper itself"
    );
    let redis = TestRedis::start();
    let (node, api) = start_node(node_config(&redis.url(), None, Clock::redis())).await;
    let path = "/api/ai/tasks";
    let now = unix_now_s();
    let good = user_claims("alice");

    // Controls: tokens crafted here the same way are accepted when sound, so
    // the refusals below come from the defect and not from the crafting.
    let crafted = sign(Algorithm::HS256, TEST_SECRET, &good);
    api.get_with_authorization(path, Some(&format!("Bearer {crafted}")))
        .await
        .expect_status(200);
    let crafted_worker = sign(
        Algorithm::HS256,
        TEST_SECRET,
        &with(
            with(good.clone(), "role", json!("worker")),
            "agent",
            json!("echo"),
        ),
    );
    api.get_with_authorization(path, Some(&format!("Bearer {crafted_worker}")))
        .await
        .expect_status(200);

    let valid_parts: Vec<&str> = crafted.split('.').collect();
    let other_secret = "another-secret-another-secret-another!";
    let hs256 = |claims: &Value| Some(bearer(Algorithm::HS256, TEST_SECRET, claims));
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no Authorization header", None),
        ("empty bearer", Some("Bearer ".into())),
        ("bearer garbage", Some("Bearer garbage".into())),
        ("three garbage segments", Some("Bearer aaa.bbb.ccc".into())),
        ("Basic scheme", Some("Basic YWxpY2U6c2VjcmV0".into())),
        ("token without scheme", Some(crafted.clone())),
        (
            "signed with another secret",
            Some(bearer(Algorithm::HS256, other_secret, &good)),
        ),
        (
            "alg none, empty signature",
            Some(format!("Bearer {}", unsigned_token(&good))),
        ),
        (
            "alg none header on a valid signature",
            Some(format!(
                "Bearer {}.{}.{}",
                b64url(br#"{"alg":"none","typ":"JWT"}"#),
                valid_parts[1],
                valid_parts[2]
            )),
        ),
        (
            "HS256 header, signature stripped",
            Some(format!("Bearer {}.{}.", valid_parts[0], valid_parts[1])),
        ),
        (
            "HS384 with the right secret",
            Some(bearer(Algorithm::HS384, TEST_SECRET, &good)),
        ),
        (
            "HS512 with the right secret",
            Some(bearer(Algorithm::HS512, TEST_SECRET, &good)),
        ),
        (
            "expired an hour ago",
            hs256(&with(good.clone(), "exp", json!(now - 3600))),
        ),
        (
            "not valid for another hour (nbf)",
            hs256(&with(good.clone(), "nbf", json!(now + 3600))),
        ),
        ("no exp", hs256(&without(good.clone(), "exp"))),
        ("no sub", hs256(&without(good.clone(), "sub"))),
        ("no role", hs256(&without(good.clone(), "role"))),
        (
            "worker without agent claim",
            hs256(&with(good.clone(), "role", json!("worker"))),
        ),
        (
            "unknown role",
            hs256(&with(good.clone(), "role", json!("superuser"))),
        ),
    ];
    let mut failures = Vec::new();
    for (case, authorization) in &cases {
        let answer = api
            .get_with_authorization(path, authorization.as_deref())
            .await;
        if let Err(e) = answer.check_refusal(401, "UNAUTHORIZED") {
            failures.push(format!("{case}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} defective tokens were not refused as expected:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    node.stop().await;
}

/// A node requiring issuer "issuer-a" and audience "taskherd-api".
async fn start_node_with_issuer_and_audience(redis: &TestRedis) -> (TestNode, Api) {
    let mut config = node_config(&redis.url(), None, Clock::redis());
    config.auth = AuthConfig {
        secret: TEST_SECRET.as_bytes().to_vec(),
        issuer: Some("issuer-a".into()),
        audience: Some("taskherd-api".into()),
    };
    start_node(config).await
}

/// User claims with `iss` and `aud`.
fn claims_from(iss: &str, aud: &str) -> Value {
    with(
        with(user_claims("alice"), "iss", json!(iss)),
        "aud",
        json!(aud),
    )
}

/// Sends each token to a protected route; returns the cases not refused
/// with 401 and the error body.
async fn not_refused(api: &Api, cases: &[(&str, String)]) -> Vec<String> {
    let mut failures = Vec::new();
    for (case, token) in cases {
        let answer = api.get("/api/ai/tasks", token).await;
        if let Err(e) = answer.check_refusal(401, "UNAUTHORIZED") {
            failures.push(format!("{case}: {e}"));
        }
    }
    failures
}

#[tokio::test]
async fn a_node_with_issuer_and_audience_refuses_wrong_ones() {
    let redis = TestRedis::start();
    let (node, api) = start_node_with_issuer_and_audience(&redis).await;
    let signed = |claims: Value| sign(Algorithm::HS256, TEST_SECRET, &claims);

    let accepted = api
        .get(
            "/api/ai/tasks",
            &signed(claims_from("issuer-a", "taskherd-api")),
        )
        .await;
    assert!(accepted.request_id.is_some());
    accepted.expect_status(200);

    let failures = not_refused(
        &api,
        &[
            ("wrong aud", signed(claims_from("issuer-a", "another-api"))),
            ("wrong iss", signed(claims_from("issuer-b", "taskherd-api"))),
            ("both wrong", signed(claims_from("issuer-b", "another-api"))),
        ],
    )
    .await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    node.stop().await;
}

// Regression: Auth::new once required only `exp` and `sub`, and jsonwebtoken
// checks `iss` / `aud` only when a token carries them, so such a node accepted
// tokens with neither (fixed in 4fd5c84: configured ones are required).
#[tokio::test]
async fn a_node_with_issuer_and_audience_refuses_tokens_without_them() {
    let redis = TestRedis::start();
    let (node, api) = start_node_with_issuer_and_audience(&redis).await;
    let signed = |claims: Value| sign(Algorithm::HS256, TEST_SECRET, &claims);
    let failures = not_refused(
        &api,
        &[
            ("neither iss nor aud", signed(user_claims("alice"))),
            (
                "aud only",
                signed(with(user_claims("alice"), "aud", json!("taskherd-api"))),
            ),
            (
                "iss only",
                signed(with(user_claims("alice"), "iss", json!("issuer-a"))),
            ),
            ("minted for a node without iss/aud", admin_token()),
        ],
    )
    .await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    node.stop().await;
}

// ---------------------------------------------------------------- 2. public

#[tokio::test]
async fn health_spec_and_docs_need_no_token() {
    let redis = TestRedis::start();
    let (node, api) = start_node(node_config(&redis.url(), None, Clock::redis())).await;

    let health = api
        .call(Method::GET, "/api/ai/tasks/health", None, None)
        .await;
    assert!(health.request_id.is_some(), "health has a request id");
    let health = health.expect_status(200);
    assert_eq!(health["redis"]["reachable"], json!(true));

    for probe in ["/api/ai/tasks/health/live", "/api/ai/tasks/health/ready"] {
        let answer = api.call(Method::GET, probe, None, None).await;
        assert!(answer.request_id.is_some(), "{probe} has a request id");
        answer.expect_status(200);
    }

    let spec = api.call(Method::GET, "/api/openapi.json", None, None).await;
    assert!(spec.request_id.is_some(), "spec has a request id");
    let spec = spec.expect_status(200);
    assert!(spec["openapi"].is_string(), "an OpenAPI document: {spec}");
    assert!(spec["paths"]["/api/ai/tasks"].is_object());

    let docs = api.call(Method::GET, "/api/docs/", None, None).await;
    assert_eq!(docs.status.as_u16(), 200, "docs: {}", docs.text);
    assert!(
        docs.text.to_lowercase().contains("<html"),
        "docs are an HTML page"
    );

    // The same routes behind them do need a token.
    api.call(Method::GET, "/api/ai/tasks", None, None)
        .await
        .assert_refused(401, "UNAUTHORIZED");
    node.stop().await;
}

// ---------------------------------------------------------------- 3. matrix

/// What a caller must get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Any 2xx.
    Allowed,
    /// 401 UNAUTHORIZED.
    Unauthorized,
    /// 403 FORBIDDEN.
    Forbidden,
    /// 404 TASK_NOT_FOUND (the task exists but is not the caller's).
    Hidden,
}

use Outcome::{Allowed, Forbidden, Hidden};

/// The callers of the matrix.
#[derive(Clone, Copy, Debug)]
enum Caller {
    Anonymous,
    Admin,
    User,
    /// Worker bound to agent "echo", the agent of every fixture task.
    EchoWorker,
    /// Worker bound to agent "other".
    OtherWorker,
}

const CALLERS: [Caller; 5] = [
    Caller::Anonymous,
    Caller::Admin,
    Caller::User,
    Caller::EchoWorker,
    Caller::OtherWorker,
];

/// What must exist before the request; its id goes into the path.
#[derive(Clone, Copy, Debug)]
enum Setup {
    Nothing,
    /// A QUEUED echo task of the user.
    QueuedTask,
    /// A CANCELLED echo task of the user.
    CancelledTask,
    /// An echo task of the user leased to the admin; the body carries its
    /// lease token.
    LeasedTask,
    /// The agent "echo" (it has a record).
    EchoAgent,
    /// An agent record made for this request only.
    FreshAgent,
    /// An agent id without a record.
    NewAgentId,
}

/// The request body an operation needs.
#[derive(Clone, Copy, Debug)]
enum Body {
    None,
    NewTask,
    Batch,
    Claim,
    Start,
    Heartbeat,
    Complete,
    Fail,
    AgentInput,
}

/// One operation of the spec and who may call it.
struct Rule {
    method: &'static str,
    /// As the spec writes it (`{id}`).
    path: &'static str,
    setup: Setup,
    body: Body,
    /// Needs no token (and the spec declares no security).
    public: bool,
    /// Admin, user, echo worker, other worker.
    expect: [Outcome; 4],
}

/// The rules of src/auth.rs and the API docs, one row per operation.
fn rules() -> Vec<Rule> {
    let row = |method, path, setup, body, expect| Rule {
        method,
        path,
        setup,
        body,
        public: false,
        expect,
    };
    let everyone = [Allowed; 4];
    let submitters = [Allowed, Allowed, Forbidden, Forbidden];
    let admin_only = [Allowed, Forbidden, Forbidden, Forbidden];
    let runners = [Allowed, Forbidden, Allowed, Hidden];
    vec![
        Rule {
            public: true,
            ..row(
                "GET",
                "/api/ai/tasks/health",
                Setup::Nothing,
                Body::None,
                everyone,
            )
        },
        Rule {
            public: true,
            ..row(
                "GET",
                "/api/ai/tasks/health/live",
                Setup::Nothing,
                Body::None,
                everyone,
            )
        },
        Rule {
            public: true,
            ..row(
                "GET",
                "/api/ai/tasks/health/ready",
                Setup::Nothing,
                Body::None,
                everyone,
            )
        },
        row(
            "POST",
            "/api/ai/tasks",
            Setup::Nothing,
            Body::NewTask,
            submitters,
        ),
        row(
            "GET",
            "/api/ai/tasks",
            Setup::QueuedTask,
            Body::None,
            everyone,
        ),
        row(
            "GET",
            "/api/ai/tasks/{id}",
            Setup::QueuedTask,
            Body::None,
            [Allowed, Allowed, Allowed, Hidden],
        ),
        row(
            "PUT",
            "/api/ai/tasks/{id}/cancel",
            Setup::QueuedTask,
            Body::None,
            submitters,
        ),
        row(
            "POST",
            "/api/ai/tasks/{id}/retry",
            Setup::CancelledTask,
            Body::None,
            submitters,
        ),
        row(
            "GET",
            "/api/ai/tasks/{id}/retry",
            Setup::CancelledTask,
            Body::None,
            submitters,
        ),
        row(
            "POST",
            "/api/ai/tasks/batch",
            Setup::Nothing,
            Body::Batch,
            submitters,
        ),
        row(
            "GET",
            "/api/ai/tasks/queue/status",
            Setup::Nothing,
            Body::None,
            everyone,
        ),
        row(
            "GET",
            "/api/ai/tasks/statistics/summary",
            Setup::Nothing,
            Body::None,
            everyone,
        ),
        row(
            "POST",
            "/api/ai/tasks/cleanup/old",
            Setup::Nothing,
            Body::None,
            admin_only,
        ),
        row(
            "POST",
            "/api/ai/tasks/cleanup/timeout-stale",
            Setup::Nothing,
            Body::None,
            admin_only,
        ),
        row(
            "POST",
            "/api/ai/agents/{agent_id}/claim",
            Setup::EchoAgent,
            Body::Claim,
            [Allowed, Forbidden, Allowed, Forbidden],
        ),
        row(
            "POST",
            "/api/ai/tasks/{id}/start",
            Setup::QueuedTask,
            Body::Start,
            runners,
        ),
        row(
            "POST",
            "/api/ai/tasks/{id}/heartbeat",
            Setup::LeasedTask,
            Body::Heartbeat,
            runners,
        ),
        row(
            "POST",
            "/api/ai/tasks/{id}/complete",
            Setup::LeasedTask,
            Body::Complete,
            runners,
        ),
        row(
            "POST",
            "/api/ai/tasks/{id}/fail",
            Setup::LeasedTask,
            Body::Fail,
            runners,
        ),
        row(
            "GET",
            "/api/ai/agents",
            Setup::Nothing,
            Body::None,
            everyone,
        ),
        row(
            "GET",
            "/api/ai/agents/{id}",
            Setup::EchoAgent,
            Body::None,
            everyone,
        ),
        row(
            "PUT",
            "/api/ai/agents/{id}",
            Setup::NewAgentId,
            Body::AgentInput,
            admin_only,
        ),
        row(
            "DELETE",
            "/api/ai/agents/{id}",
            Setup::FreshAgent,
            Body::None,
            admin_only,
        ),
        row("GET", "/api/ai/nodes", Setup::Nothing, Body::None, everyone),
        // Admins and `metrics` tokens (tested in `metrics.rs`).
        row("GET", "/metrics", Setup::Nothing, Body::None, admin_only),
    ]
}

/// Every operation of a spec: ("METHOD", path) -> whether it declares
/// security.
fn spec_operations(spec: &Value) -> BTreeMap<(String, String), bool> {
    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    let mut ops = BTreeMap::new();
    for (path, item) in spec["paths"].as_object().expect("spec has paths") {
        for (method, op) in item.as_object().expect("path item object") {
            if !METHODS.contains(&method.as_str()) {
                continue;
            }
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            ops.insert((method.to_uppercase(), path.clone()), secured);
        }
    }
    ops
}

struct Tokens {
    admin: String,
    user: String,
    echo_worker: String,
    other_worker: String,
}

impl Tokens {
    fn new() -> Self {
        Self {
            admin: admin_token(),
            user: token("alice", Role::User, None),
            echo_worker: token("worker-echo", Role::Worker, Some("echo")),
            other_worker: token("worker-other", Role::Worker, Some("other")),
        }
    }

    fn of(&self, caller: Caller) -> Option<&str> {
        match caller {
            Caller::Anonymous => None,
            Caller::Admin => Some(&self.admin),
            Caller::User => Some(&self.user),
            Caller::EchoWorker => Some(&self.echo_worker),
            Caller::OtherWorker => Some(&self.other_worker),
        }
    }
}

/// Makes what `setup` asks for; returns the path id and a lease token.
async fn prepare(
    api: &Api,
    tokens: &Tokens,
    setup: Setup,
    serial: usize,
) -> (String, Option<String>) {
    match setup {
        Setup::Nothing => (String::new(), None),
        Setup::QueuedTask => {
            let task = api.create_task(&tokens.user, "echo", "NORMAL").await;
            (str_of(&task["id"]), None)
        }
        Setup::CancelledTask => {
            let id = str_of(&api.create_task(&tokens.user, "echo", "NORMAL").await["id"]);
            let cancelled = api
                .call(
                    Method::PUT,
                    &format!("/api/ai/tasks/{id}/cancel"),
                    Some(&tokens.user),
                    None,
                )
                .await
                .expect_status(200);
            assert_eq!(cancelled["status"], json!("CANCELLED"));
            (id, None)
        }
        Setup::LeasedTask => {
            // URGENT goes before every NORMAL task the matrix leaves queued,
            // and no URGENT task is ever left ready, so this claim takes it.
            let id = str_of(&api.create_task(&tokens.user, "echo", "URGENT").await["id"]);
            let (claimed, lease_token) = api.claim_one(&tokens.admin, "echo").await;
            assert_eq!(claimed, id, "the fixture's claim leased its own task");
            (id, Some(lease_token))
        }
        Setup::EchoAgent => ("echo".into(), None),
        Setup::FreshAgent => {
            let id = format!("matrix-agent-{serial}");
            api.call(
                Method::PUT,
                &format!("/api/ai/agents/{id}"),
                Some(&tokens.admin),
                Some(&json!({"kind": "EXTERNAL"})),
            )
            .await
            .expect_status(201);
            (id, None)
        }
        Setup::NewAgentId => (format!("matrix-new-agent-{serial}"), None),
    }
}

fn body_of(body: Body, lease_token: Option<&str>) -> Option<Value> {
    let lease_token = || lease_token.expect("a leased task fixture");
    match body {
        Body::None => None,
        Body::NewTask => Some(task_body("echo", "NORMAL")),
        Body::Batch => Some(json!({"tasks": [task_body("echo", "NORMAL")]})),
        Body::Claim => Some(json!({"maxTasks": 1})),
        Body::Start => Some(json!({"leaseMs": 5000})),
        Body::Heartbeat => Some(json!({"token": lease_token()})),
        Body::Complete => Some(json!({"token": lease_token(), "outputData": {"ok": true}})),
        Body::Fail => Some(json!({
            "token": lease_token(),
            "errorMessage": "auth matrix failure",
            "retryable": false,
        })),
        Body::AgentInput => Some(json!({"name": "matrix agent", "kind": "EXTERNAL"})),
    }
}

/// Whether `answer` is what `expected` demands.
fn check_outcome(answer: &Answer, expected: Outcome) -> Result<(), String> {
    match expected {
        Allowed => {
            if !answer.status.is_success() {
                return Err(format!(
                    "{}: status {} (expected 2xx); body: {}",
                    answer.what, answer.status, answer.text
                ));
            }
            if answer.request_id.is_none() {
                return Err(format!("{}: no x-request-id header", answer.what));
            }
            Ok(())
        }
        Outcome::Unauthorized => answer.check_refusal(401, "UNAUTHORIZED"),
        Forbidden => answer.check_refusal(403, "FORBIDDEN"),
        Hidden => answer.check_refusal(404, "TASK_NOT_FOUND"),
    }
}

#[tokio::test]
async fn every_operation_of_the_spec_answers_each_role_by_the_rules() {
    let redis = TestRedis::start();
    let (node, api) = start_node(node_config(&redis.url(), None, Clock::redis())).await;
    let tokens = Tokens::new();

    // The table must cover the live spec exactly: a new operation fails here
    // until it gets a row.
    let spec = api
        .call(Method::GET, "/api/openapi.json", None, None)
        .await
        .expect_status(200);
    let in_spec = spec_operations(&spec);
    let rules = rules();
    let in_table: BTreeSet<(String, String)> = rules
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    assert_eq!(in_table.len(), rules.len(), "one row per operation");
    let uncovered: Vec<_> = in_spec.keys().filter(|k| !in_table.contains(*k)).collect();
    assert!(
        uncovered.is_empty(),
        "operations in the spec without a row in the auth matrix (add them to rules()): {uncovered:?}"
    );
    let stale: Vec<_> = in_table
        .iter()
        .filter(|k| !in_spec.contains_key(*k))
        .collect();
    assert!(
        stale.is_empty(),
        "auth matrix rows for operations the spec no longer has: {stale:?}"
    );
    for rule in &rules {
        let secured = in_spec[&(rule.method.to_string(), rule.path.to_string())];
        assert_eq!(
            secured, !rule.public,
            "{} {}: the spec's security does not match the table",
            rule.method, rule.path
        );
    }

    api.call(
        Method::PUT,
        "/api/ai/agents/echo",
        Some(&tokens.admin),
        Some(&json!({"kind": "EXTERNAL"})),
    )
    .await
    .expect_status(201);

    let mut failures = Vec::new();
    let mut requests = 0usize;
    for (row, rule) in rules.iter().enumerate() {
        for (column, caller) in CALLERS.into_iter().enumerate() {
            let expected = match caller {
                Caller::Anonymous if rule.public => Allowed,
                Caller::Anonymous => Outcome::Unauthorized,
                _ => rule.expect[column - 1],
            };
            let (id, lease_token) = prepare(&api, &tokens, rule.setup, row * 10 + column).await;
            let path = rule.path.replace("{id}", &id).replace("{agent_id}", &id);
            assert!(!path.contains('{'), "{path}: unfilled path parameter");
            let method = Method::from_bytes(rule.method.as_bytes()).expect("method");
            let body = body_of(rule.body, lease_token.as_deref());
            let answer = api
                .call(method, &path, tokens.of(caller), body.as_ref())
                .await;
            requests += 1;
            if let Err(e) = check_outcome(&answer, expected) {
                failures.push(format!("{caller:?} expected {expected:?}: {e}"));
            }
        }
    }
    println!(
        "auth matrix: {} operations x {} callers = {requests} requests",
        rules.len(),
        CALLERS.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {requests} matrix requests broke the rules:\n{}",
        failures.len(),
        failures.join("\n")
    );
    node.stop().await;
}

// ---------------------------------------------------------------- 4. owners

#[tokio::test]
async fn users_see_and_change_only_their_own_tasks() {
    let redis = TestRedis::start();
    let (node, api) = start_node(node_config(&redis.url(), None, Clock::redis())).await;
    let alice = token("alice", Role::User, None);
    let bob = token("bob", Role::User, None);
    let admin = admin_token();

    let alices = str_of(&api.create_task(&alice, "echo", "NORMAL").await["id"]);
    let bobs = str_of(&api.create_task(&bob, "echo", "NORMAL").await["id"]);

    // Bob cannot tell Alice's task from one that does not exist.
    let probes = [
        (Method::GET, "/api/ai/tasks/{id}"),
        (Method::PUT, "/api/ai/tasks/{id}/cancel"),
        (Method::POST, "/api/ai/tasks/{id}/retry"),
        (Method::GET, "/api/ai/tasks/{id}/retry"),
    ];
    for (method, template) in probes {
        let hidden = api
            .call(
                method.clone(),
                &template.replace("{id}", &alices),
                Some(&bob),
                None,
            )
            .await;
        hidden.assert_refused(404, "TASK_NOT_FOUND");
        let unknown = api
            .call(
                method.clone(),
                &template.replace("{id}", UNKNOWN_TASK_ID),
                Some(&bob),
                None,
            )
            .await;
        unknown.assert_refused(404, "TASK_NOT_FOUND");
        assert_eq!(
            hidden.refusal_shape(),
            unknown.refusal_shape(),
            "{method} {template}: someone else's task answers like an unknown one"
        );
    }
    // ... and none of it touched the task.
    let still = api
        .get(&format!("/api/ai/tasks/{alices}"), &alice)
        .await
        .expect_status(200);
    assert_eq!(still["status"], json!("QUEUED"));
    assert_eq!(still["ownerId"], json!("alice"));

    // Lists: each user sees their own, counted alone; the admin sees both.
    for (who, bearer, own, foreign) in [
        ("bob", &bob, &bobs, &alices),
        ("alice", &alice, &alices, &bobs),
    ] {
        for query in ["", "?agentId=echo", "?status=QUEUED"] {
            let page = api
                .get(&format!("/api/ai/tasks{query}"), bearer)
                .await
                .expect_status(200);
            let ids = listed_ids(&page);
            assert!(ids.contains(own), "{who} lists their task ({query})");
            assert!(
                !ids.contains(foreign),
                "{who} does not list the other's task ({query})"
            );
            assert_eq!(page["totalCount"], json!(1), "{who}'s totalCount ({query})");
        }
    }
    let all = api.get("/api/ai/tasks", &admin).await.expect_status(200);
    let ids = listed_ids(&all);
    assert!(
        ids.contains(&alices) && ids.contains(&bobs),
        "admin sees both"
    );
    assert_eq!(all["totalCount"], json!(2));

    // Idempotency keys belong to their owner.
    let create_keyed = |bearer: &str| {
        api.request(Method::POST, "/api/ai/tasks", Some(bearer))
            .header("Idempotency-Key", "same-key")
            .json(&task_body("echo", "NORMAL"))
    };
    let alice_first = Api::send("alice keyed".into(), create_keyed(&alice))
        .await
        .expect_status(201);
    let bob_first = Api::send("bob keyed".into(), create_keyed(&bob))
        .await
        .expect_status(201);
    assert_ne!(
        alice_first["id"], bob_first["id"],
        "the same key from two owners makes two tasks"
    );
    assert_eq!(alice_first["ownerId"], json!("alice"));
    assert_eq!(bob_first["ownerId"], json!("bob"));
    let alice_again = Api::send("alice keyed again".into(), create_keyed(&alice))
        .await
        .expect_status(200);
    assert_eq!(alice_again["id"], alice_first["id"]);
    let bob_again = Api::send("bob keyed again".into(), create_keyed(&bob))
        .await
        .expect_status(200);
    assert_eq!(bob_again["id"], bob_first["id"]);
    node.stop().await;
}

// ---------------------------------------------------------------- 5. agents

#[tokio::test]
async fn a_worker_token_runs_only_its_own_agents_tasks() {
    let redis = TestRedis::start();
    let (node, api) = start_node(node_config(&redis.url(), None, Clock::redis())).await;
    let user = token("alice", Role::User, None);
    let a1 = token("worker-a1", Role::Worker, Some("a1"));
    let a2 = token("worker-a2", Role::Worker, Some("a2"));

    let id = str_of(&api.create_task(&user, "a2", "NORMAL").await["id"]);

    api.call(
        Method::POST,
        "/api/ai/agents/a2/claim",
        Some(&a1),
        Some(&json!({"maxTasks": 1})),
    )
    .await
    .assert_refused(403, "FORBIDDEN");
    let queued = api
        .get(&format!("/api/ai/tasks/{id}"), &user)
        .await
        .expect_status(200);
    assert_eq!(
        queued["status"],
        json!("QUEUED"),
        "the refused claim took nothing"
    );

    let (claimed, lease_token) = api.claim_one(&a2, "a2").await;
    assert_eq!(claimed, id);

    // a1 holds a real lease token of an a2 task: still "not found".
    let attempts = [
        ("heartbeat", json!({"token": lease_token})),
        (
            "complete",
            json!({"token": lease_token, "outputData": {"stolen": true}}),
        ),
        (
            "fail",
            json!({"token": lease_token, "errorMessage": "not mine", "retryable": false}),
        ),
    ];
    for (action, body) in &attempts {
        api.call(
            Method::POST,
            &format!("/api/ai/tasks/{id}/{action}"),
            Some(&a1),
            Some(body),
        )
        .await
        .assert_refused(404, "TASK_NOT_FOUND");
    }
    api.get(&format!("/api/ai/tasks/{id}"), &a1)
        .await
        .assert_refused(404, "TASK_NOT_FOUND");
    for query in ["", "?agentId=a2"] {
        let page = api
            .get(&format!("/api/ai/tasks{query}"), &a1)
            .await
            .expect_status(200);
        assert!(
            !listed_ids(&page).contains(&id),
            "a1 does not list a2's task ({query})"
        );
        assert_eq!(page["totalCount"], json!(0), "a1's totalCount ({query})");
    }

    // None of it touched the lease: a2 still holds it and finishes the task.
    let task = api
        .get(&format!("/api/ai/tasks/{id}"), &a2)
        .await
        .expect_status(200);
    assert_eq!(task["status"], json!("PROCESSING"));
    assert_eq!(task["workerId"], json!("worker-a2"));
    api.call(
        Method::POST,
        &format!("/api/ai/tasks/{id}/heartbeat"),
        Some(&a2),
        Some(&json!({"token": lease_token})),
    )
    .await
    .expect_status(200);
    let done = api
        .call(
            Method::POST,
            &format!("/api/ai/tasks/{id}/complete"),
            Some(&a2),
            Some(&json!({"token": lease_token, "outputData": {"ok": true}})),
        )
        .await
        .expect_status(200);
    assert_eq!(done["status"], json!("COMPLETED"));
    assert_eq!(done["outputData"], json!({"ok": true}));
    node.stop().await;
}
