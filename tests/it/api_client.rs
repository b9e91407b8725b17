//! A small JSON client for REST tests: every call returns status, headers and
//! the parsed body (Null when empty).

use poem::http::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::support::TestNode;

/// One answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    /// The error code of an error body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// Asserts the status and returns the body.
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.body
        );
        self.body
    }

    /// Asserts an error answer: status, code, and the one error shape.
    #[track_caller]
    pub fn expect_error(self, status: u16, code: &str) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.body
        );
        assert_eq!(self.code(), code, "body: {}", self.body);
        assert!(
            self.body["error"]["message"].is_string(),
            "error body without message: {}",
            self.body
        );
        assert!(
            self.headers.contains_key("x-request-id"),
            "error without a request id"
        );
        self.body
    }
}

/// A client bound to one node and one token.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub token: Option<String>,
    pub client: reqwest::Client,
}

impl Api {
    pub fn new(node: &TestNode, token: impl Into<String>) -> Self {
        Self {
            base: node.url(""),
            token: Some(token.into()),
            client: reqwest::Client::new(),
        }
    }

    /// A client for a node at `base` (e.g. a child-process node).
    pub fn at(base: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            base: base.into(),
            token: Some(token.into()),
            client: reqwest::Client::new(),
        }
    }

    pub fn anonymous(node: &TestNode) -> Self {
        Self {
            base: node.url(""),
            token: None,
            client: reqwest::Client::new(),
        }
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req
    }

    pub async fn send(req: reqwest::RequestBuilder) -> Answer {
        let resp = req.send().await.expect("request sent");
        let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body read");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("body is not JSON: {}", String::from_utf8_lossy(&bytes)))
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        Self::send(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        Self::send(self.request(reqwest::Method::DELETE, path)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        Self::send(self.request(reqwest::Method::POST, path).json(&body)).await
    }

    pub async fn post_empty(&self, path: &str) -> Answer {
        Self::send(self.request(reqwest::Method::POST, path)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Answer {
        Self::send(self.request(reqwest::Method::PUT, path).json(&body)).await
    }

    pub async fn put_empty(&self, path: &str) -> Answer {
        Self::send(self.request(reqwest::Method::PUT, path)).await
    }

    /// Creates a task and returns its JSON (asserts 201).
    pub async fn create(&self, body: Value) -> Value {
        self.post("/api/ai/tasks", body).await.expect(201)
    }
}
