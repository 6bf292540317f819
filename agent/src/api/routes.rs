use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ironic_protocol::{Fault, IPA_COMPATIBLE_VERSION};
use serde_json::{json, Value};

use crate::agent::Agent;
use crate::commands::ApiError;

type Params = Query<HashMap<String, String>>;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        fault(self.status(), self.to_string())
    }
}

fn fault(status: u16, text: impl Into<String>) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, Json(Fault::new(status, text))).into_response()
}

/// The API router. Paths are strict about trailing slashes, like IPA's werkzeug routes:
/// `/v1/commands` redirects to `/v1/commands/`.
pub fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/v1", get(v1))
        .route("/v1/", get(v1))
        .route("/status", get(status))
        .route("/v1/status", get(status))
        .route("/commands", get(add_slash).post(add_slash))
        .route("/v1/commands", get(add_slash).post(add_slash))
        .route("/commands/", get(list_commands).post(run_command))
        .route("/v1/commands/", get(list_commands).post(run_command))
        .route("/commands/{id}", get(get_command))
        .route("/v1/commands/{id}", get(get_command))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(log_request))
        .with_state(agent)
}

/// One line per request: method, path and status. Never the query string, which carries the
/// agent token.
async fn log_request(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    tracing::info!(%method, path, status = resp.status().as_u16(),
        ms = started.elapsed().as_millis() as u64, "API request");
    resp
}

async fn not_found() -> Response {
    fault(
        404,
        "404 Not Found: The requested URL was not found on the server.",
    )
}

async fn method_not_allowed() -> Response {
    fault(
        405,
        "405 Method Not Allowed: The method is not allowed for the requested URL.",
    )
}

/// werkzeug answers a missing trailing slash with a permanent redirect that keeps the method.
async fn add_slash(uri: Uri) -> Response {
    let target = match uri.query() {
        Some(q) => format!("{}/?{q}", uri.path()),
        None => format!("{}/", uri.path()),
    };
    (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, target)]).into_response()
}

fn base_url(headers: &HeaderMap, agent: &Agent) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("{}://{host}", agent.api_scheme())
}

fn version_links(base: &str) -> Value {
    json!([
        {"href": format!("{base}/v1/"), "rel": "self"},
        {"href": "https://docs.openstack.org/ironic-python-agent", "rel": "describedby", "type": "text/html"}
    ])
}

async fn root(State(agent): State<Arc<Agent>>, headers: HeaderMap) -> Response {
    let base = base_url(&headers, &agent);
    let v1 = json!({"id": "v1", "links": version_links(&base)});
    Json(json!({
        "name": "OpenStack Ironic Python Agent API",
        "description": "Ironic Python Agent is a provisioning agent for OpenStack Ironic",
        "versions": [v1],
        "default_version": v1,
    }))
    .into_response()
}

async fn v1(State(agent): State<Arc<Agent>>, headers: HeaderMap) -> Response {
    let base = base_url(&headers, &agent);
    Json(json!({
        "id": "v1",
        "links": version_links(&base),
        "commands": [{"href": format!("{base}/v1/commands/"), "rel": "self"}],
        "status": [{"href": format!("{base}/v1/status"), "rel": "self"}],
        "media_types": [{"base": "application/json", "type": "application/vnd.openstack.ironic-python-agent.v1+json"}],
    }))
    .into_response()
}

async fn status(State(agent): State<Arc<Agent>>) -> Response {
    Json(json!({"started_at": agent.started_at(), "version": IPA_COMPATIBLE_VERSION}))
        .into_response()
}

fn check_token(agent: &Agent, params: &HashMap<String, String>) -> Result<(), ApiError> {
    match params.get("agent_token") {
        Some(t) if agent.token_matches(t) => Ok(()),
        _ => Err(ApiError::Unauthorized),
    }
}

fn wants_wait(params: &HashMap<String, String>) -> bool {
    params
        .get("wait")
        .is_some_and(|w| w.eq_ignore_ascii_case("true"))
}

async fn list_commands(
    State(agent): State<Arc<Agent>>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    check_token(&agent, &params)?;
    Ok(Json(json!({"commands": agent.executor().results()})).into_response())
}

async fn get_command(
    State(agent): State<Arc<Agent>>,
    Path(id): Path<String>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    check_token(&agent, &params)?;
    let record = agent
        .executor()
        .history()
        .get(&id)
        .ok_or_else(|| ApiError::NotFound(format!("Command with id {id} not found.")))?;
    if wants_wait(&params) {
        record.wait().await;
    }
    Ok(Json(record.snapshot()).into_response())
}

async fn run_command(
    State(agent): State<Arc<Agent>>,
    Query(params): Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_token(&agent, &params)?;
    // IPA parses the body as JSON whatever the Content-Type says.
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::InvalidBody(format!("body is not JSON: {e}")))?;
    let (Some(Value::String(name)), Some(Value::Object(cmd_params))) =
        (body.get("name"), body.get("params"))
    else {
        return Err(ApiError::InvalidBody(
            "Missing or invalid name or params".into(),
        ));
    };
    let record = agent
        .executor()
        .execute(&agent, name, cmd_params.clone())
        .await?;
    if wants_wait(&params) {
        record.wait().await;
    }
    Ok(Json(record.snapshot()).into_response())
}
