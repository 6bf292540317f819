//! Routes and handlers.
//!
//! # Hazards
//! Anyone on the provisioning network can reach this API; only the conductor has the token.
//! So nothing an unauthenticated request sends is buffered: the token is checked on the
//! request head ([`require_token`]), before any handler, and only then may a handler read a
//! body. Command bodies are large (inline configdrives, see [`MAX_COMMAND_BODY`]), so they
//! are read under a small semaphore that bounds how many are held in memory at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http_body_util::BodyExt;
use ironic_protocol::{Fault, IPA_COMPATIBLE_VERSION};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use super::connections::ConnectionHandle;
use crate::agent::Agent;
use crate::commands::{ApiError, Executor};

type Params = Query<HashMap<String, String>>;

/// The largest command body accepted (after authentication): 132 MiB.
///
/// The big thing Ironic sends inline is the configdrive (gzipped, base64), in
/// `standby.prepare_image` and in the `write_image` deploy step, where Ironic 39 puts it
/// twice (`args.configdrive` and `args.image_info.configdrive`, `drivers/modules/agent.py`).
/// Ironic 39's API accepts a provision request, configdrive included, of at most
/// `[api] max_json_body_size_provision` = 64 MiB (`conf/api.py`, enforced by
/// `api/middleware/json_depth.py`), and IPA refuses a configdrive larger than 64 MiB
/// unpacked (`MAX_CONFIG_DRIVE_SIZE_MB`). So: twice 64 MiB, plus 4 MiB for the rest of the
/// step (image_info, JSON). IPA 13 itself sets no limit (werkzeug's `max_content_length` is
/// unset). With `[deploy] configdrive_use_object_store` Ironic sends a URL instead.
pub const MAX_COMMAND_BODY: usize = 2 * (64 << 20) + (4 << 20);

/// How many command bodies may be read at once. Ironic sends one command at a time and the
/// agent runs one at a time (another POST gets a 409); the second permit lets a retry start
/// while a dead connection's upload is still being torn down. Each body may be
/// [`MAX_COMMAND_BODY`] plus its parsed JSON.
const COMMAND_BODY_PERMITS: usize = 2;

/// What every handler reaches: the agent's state and the commands it runs.
#[derive(Clone)]
struct ApiState {
    agent: Arc<Agent>,
    executor: Arc<Executor>,
    bodies: Arc<Semaphore>,
}

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
///
/// Every route in the `authenticated` group passes [`require_token`] first; the others
/// (version documents, status, the slash redirects) are IPA's unauthenticated ones.
pub fn router(agent: Arc<Agent>, executor: Arc<Executor>) -> Router {
    let state = ApiState {
        agent,
        executor,
        bodies: Arc::new(Semaphore::new(COMMAND_BODY_PERMITS)),
    };
    let authenticated = Router::new()
        .route("/commands/", get(list_commands).post(run_command))
        .route("/v1/commands/", get(list_commands).post(run_command))
        .route("/commands/{id}", get(get_command))
        .route("/v1/commands/{id}", get(get_command))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ));
    Router::new()
        .route("/", get(root))
        .route("/v1", get(v1))
        .route("/v1/", get(v1))
        .route("/status", get(status))
        .route("/v1/status", get(status))
        .route("/commands", get(add_slash).post(add_slash))
        .route("/v1/commands", get(add_slash).post(add_slash))
        .merge(authenticated)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(log_request))
        .with_state(state)
}

/// IPA's token check (`require_agent_token_for_command`), on the request head only: a
/// request without the token is answered before its body is read, so it costs no memory and
/// cannot hold the connection by trickling a body. A connection that passes is marked
/// authenticated, which protects it when the server sheds connections.
async fn require_token(State(api): State<ApiState>, req: Request, next: Next) -> Response {
    let token_ok = Query::<HashMap<String, String>>::try_from_uri(req.uri())
        .ok()
        .and_then(|Query(params)| params.get("agent_token").cloned())
        .is_some_and(|t| api.agent.token_matches(&t));
    if !token_ok {
        return ApiError::Unauthorized.into_response();
    }
    if let Some(conn) = req.extensions().get::<ConnectionHandle>() {
        conn.mark_authenticated();
    }
    next.run(req).await
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

async fn root(State(api): State<ApiState>, headers: HeaderMap) -> Response {
    let base = base_url(&headers, &api.agent);
    let v1 = json!({"id": "v1", "links": version_links(&base)});
    Json(json!({
        "name": "OpenStack Ironic Python Agent API",
        "description": "Ironic Python Agent is a provisioning agent for OpenStack Ironic",
        "versions": [v1],
        "default_version": v1,
    }))
    .into_response()
}

async fn v1(State(api): State<ApiState>, headers: HeaderMap) -> Response {
    let base = base_url(&headers, &api.agent);
    Json(json!({
        "id": "v1",
        "links": version_links(&base),
        "commands": [{"href": format!("{base}/v1/commands/"), "rel": "self"}],
        "status": [{"href": format!("{base}/v1/status"), "rel": "self"}],
        "media_types": [{"base": "application/json", "type": "application/vnd.openstack.ironic-python-agent.v1+json"}],
    }))
    .into_response()
}

async fn status(State(api): State<ApiState>) -> Response {
    Json(json!({"started_at": api.agent.started_at(), "version": IPA_COMPATIBLE_VERSION}))
        .into_response()
}

fn wants_wait(params: &HashMap<String, String>) -> bool {
    params
        .get("wait")
        .is_some_and(|w| w.eq_ignore_ascii_case("true"))
}

async fn list_commands(State(api): State<ApiState>) -> Result<Response, ApiError> {
    let delivery = api.agent.delivery();
    let ticket = delivery.before_read();
    let commands = api.agent.history().snapshot();
    delivery.after_read(ticket, tokio::time::Instant::now());
    Ok(Json(json!({"commands": commands})).into_response())
}

async fn get_command(
    State(api): State<ApiState>,
    Path(id): Path<String>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let record = api
        .agent
        .history()
        .get(&id)
        .ok_or_else(|| ApiError::NotFound(format!("Command with id {id} not found.")))?;
    if wants_wait(&params) {
        record.wait().await;
    }
    let delivery = api.agent.delivery();
    let ticket = delivery.before_read();
    let snapshot = record.snapshot();
    delivery.after_read(ticket, tokio::time::Instant::now());
    Ok(Json(snapshot).into_response())
}

async fn run_command(
    State(api): State<ApiState>,
    Query(params): Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Response> {
    let body = read_command_body(&api, &headers, body).await?;
    let (name, cmd_params) = parse_command(&body).map_err(IntoResponse::into_response)?;
    // The raw body can be as large as the parsed one; it is not kept while the command runs.
    drop(body);
    let record = api
        .executor
        .execute(&api.agent, &name, cmd_params)
        .await
        .map_err(IntoResponse::into_response)?;
    if wants_wait(&params) {
        record.wait().await;
    } else if !record.is_done() {
        // An asynchronous command: answered with its final result if it finishes within the
        // grace, so that a conductor which polls next (`install_bootloader`) finds it done
        // instead of sleeping `command_wait_interval`; `RUNNING` otherwise, as IPA answers.
        let grace = Duration::from_millis(api.agent.config().options.async_command_grace_ms);
        let _ = tokio::time::timeout(grace, record.wait()).await;
        api.agent.delivery().answered(tokio::time::Instant::now());
    }
    Ok(Json(record.snapshot()).into_response())
}

/// werkzeug's `RequestEntityTooLarge`, in IPA's fault shape.
fn too_large() -> Response {
    fault(
        413,
        "413 Request Entity Too Large: The data value transmitted exceeds the capacity limit.",
    )
}

/// Reads an authenticated command body of at most [`MAX_COMMAND_BODY`] bytes, holding one of
/// the body permits meanwhile. A `Content-Length` above the limit is refused before anything
/// is read.
async fn read_command_body(
    api: &ApiState,
    headers: &HeaderMap,
    mut body: Body,
) -> Result<Vec<u8>, Response> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_COMMAND_BODY as u64) {
        return Err(too_large());
    }
    // The semaphore is never closed.
    let _permit = api.bodies.acquire().await.map_err(|_| too_large())?;
    // One allocation when the length is declared: no doubling copies of a 100 MiB body.
    let mut buf = Vec::with_capacity(declared.unwrap_or(0) as usize);
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| ApiError::InvalidBody(format!("reading the body: {e}")).into_response())?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > MAX_COMMAND_BODY {
                return Err(too_large());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf)
}

/// IPA's `{"name": ..., "params": {...}}`, parsed as JSON whatever the Content-Type says.
fn parse_command(body: &[u8]) -> Result<(String, serde_json::Map<String, Value>), ApiError> {
    let body: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::InvalidBody(format!("body is not JSON: {e}")))?;
    let Value::Object(mut body) = body else {
        return Err(ApiError::InvalidBody(
            "Missing or invalid name or params".into(),
        ));
    };
    match (body.remove("name"), body.remove("params")) {
        (Some(Value::String(name)), Some(Value::Object(params))) => Ok((name, params)),
        _ => Err(ApiError::InvalidBody(
            "Missing or invalid name or params".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::{CommandDef, CommandValue, Mode, NoParams, Params};
    use crate::lifecycle::Service;
    use axum::body::{Body, Bytes};
    use axum::http::Request;
    use tower::ServiceExt;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789a";

    #[derive(serde::Deserialize)]
    struct Needs {
        #[allow(dead_code)]
        count: u32,
    }
    impl Params for Needs {}

    /// An agent with the real extensions plus a `test` extension whose `block` command runs
    /// until released, to make the agent busy.
    fn agent(release: Arc<tokio::sync::Notify>) -> Service {
        let config =
            crate::config::Config::from_args(["ironic-agent", "--cmdline-file", "/dev/null"])
                .unwrap();
        let mut exts = crate::extensions::all();
        exts.push((
            "test",
            vec![
                CommandDef::new("block", Mode::Async, move |_, _: NoParams| {
                    let r = release.clone();
                    async move {
                        r.notified().await;
                        Ok(CommandValue::Text("released".into()))
                    }
                }),
                CommandDef::new("needs", Mode::Sync, |_, _: Needs| async {
                    Ok(CommandValue::Null)
                }),
                CommandDef::new("fails", Mode::Sync, |_, _: NoParams| async {
                    Err(ironic_protocol::CommandError::new(
                        ironic_protocol::ErrorClass::CleaningError,
                        "disk on fire",
                    ))
                }),
            ],
        ));
        let a =
            Service::with_extensions(config, crate::logging::LogBuffer::new(1024), exts).unwrap();
        a.agent.set_token(TOKEN);
        a
    }

    async fn call(service: &Service, method: &str, uri: &str, body: &str) -> (u16, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("Content-Type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let resp = service.router().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    fn cmds(query: &str) -> String {
        format!("/v1/commands/?agent_token={TOKEN}{query}")
    }

    #[tokio::test]
    async fn token_is_required_and_checked() {
        let a = agent(Default::default());
        for uri in [
            "/v1/commands/",
            "/v1/commands/?agent_token=wrong",
            "/commands/",
        ] {
            let (status, body) = call(&a, "GET", uri, "").await;
            assert_eq!(status, 401, "{uri}");
            assert_eq!(body["faultstring"], "401 Unauthorized: Token invalid.");
            assert_eq!(body["faultcode"], "Client");
        }
        let (status, body) = call(&a, "GET", &cmds(""), "").await;
        assert_eq!(status, 200);
        assert_eq!(
            body,
            json!({"commands": []}),
            "a fresh agent has an empty history"
        );
    }

    /// A request whose body never arrives: only a handler that reads it waits.
    fn request_with_unsent_body(uri: &str, content_length: u64) -> Request<Body> {
        let never = futures_util::stream::pending::<Result<Bytes, std::io::Error>>();
        Request::builder()
            .method("POST")
            .uri(uri)
            .header("Content-Length", content_length.to_string())
            .body(Body::from_stream(never))
            .unwrap()
    }

    async fn within_a_second(service: &Service, req: Request<Body>) -> (u16, Value) {
        let resp = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            service.router().oneshot(req),
        )
        .await
        .expect("answered without waiting for the body")
        .unwrap();
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn a_request_without_the_token_is_refused_before_its_body_is_read() {
        let a = agent(Default::default());
        for uri in [
            "/v1/commands/",
            "/v1/commands/?agent_token=wrong",
            "/commands/",
        ] {
            // Below any body limit, so only the order of the checks decides.
            let (status, body) = within_a_second(&a, request_with_unsent_body(uri, 1 << 20)).await;
            assert_eq!(status, 401, "{uri}");
            assert_eq!(body["faultstring"], "401 Unauthorized: Token invalid.");
            assert_eq!(body["faultcode"], "Client");
        }
        // The token check comes before the size check too: a stranger learns nothing else.
        let huge = MAX_COMMAND_BODY as u64 + 1;
        let (status, _) =
            within_a_second(&a, request_with_unsent_body("/v1/commands/", huge)).await;
        assert_eq!(status, 401);
    }

    #[tokio::test]
    async fn command_bodies_above_the_limit_get_413_and_large_ones_below_it_work() {
        let a = agent(Default::default());
        let huge = MAX_COMMAND_BODY as u64 + 1;
        let (status, body) = within_a_second(&a, request_with_unsent_body(&cmds(""), huge)).await;
        assert_eq!(status, 413, "declared too large: refused before reading");
        assert_eq!(
            body["faultstring"],
            "413 Request Entity Too Large: The data value transmitted exceeds the capacity limit."
        );
        assert_eq!(body["faultcode"], "Client");

        // Without a Content-Length the limit is counted as the body streams in.
        let chunk = Bytes::from(vec![b' '; 1 << 20]);
        let chunks = MAX_COMMAND_BODY / chunk.len() + 1;
        let stream = futures_util::stream::iter(
            std::iter::repeat_n(chunk, chunks).map(Ok::<_, std::io::Error>),
        );
        let req = Request::builder()
            .method("POST")
            .uri(cmds(""))
            .body(Body::from_stream(stream))
            .unwrap();
        let resp = a.router().oneshot(req).await.unwrap();
        assert_eq!(resp.status().as_u16(), 413);

        // An inline configdrive of some MiB (axum's default limit was 2 MiB) goes through.
        let pad = "A".repeat(8 << 20);
        let body = json!({"name": "test.needs", "params": {"count": 1, "configdrive": pad}});
        let (s, b) = call(&a, "POST", &cmds("&wait=true"), &body.to_string()).await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["command_status"], "SUCCEEDED");
    }

    #[tokio::test]
    async fn agent_without_token_rejects_everything() {
        let config =
            crate::config::Config::from_args(["ironic-agent", "--cmdline-file", "/dev/null"])
                .unwrap();
        let a = Service::new(config, crate::logging::LogBuffer::new(1024)).unwrap();
        let (status, _) = call(&a, "GET", "/v1/commands/?agent_token=", "").await;
        assert_eq!(status, 401);
    }

    #[tokio::test]
    async fn command_name_errors() {
        let a = agent(Default::default());
        let (s, b) = call(&a, "POST", &cmds(""), r#"{"name": "nodot", "params": {}}"#).await;
        assert_eq!(s, 400);
        assert_eq!(
            b["faultstring"],
            "Invalid command: Command name must be of the form <extension>.<name>"
        );
        let (s, b) = call(&a, "POST", &cmds(""), r#"{"name": "nope.x", "params": {}}"#).await;
        assert_eq!(s, 404);
        assert_eq!(
            b["faultstring"],
            "Not found: Extension with id nope not found."
        );
        let (s, b) = call(
            &a,
            "POST",
            &cmds(""),
            r#"{"name": "clean.nope", "params": {}}"#,
        )
        .await;
        assert_eq!(s, 400);
        assert_eq!(b["faultstring"], "Invalid command: Unknown command: nope");
    }

    #[tokio::test]
    async fn bad_bodies_and_params() {
        let a = agent(Default::default());
        for body in [
            "not json",
            r#"{"name": "standby.sync"}"#,
            r#"{"name": 1, "params": {}}"#,
            r#"{"name": "standby.sync", "params": []}"#,
        ] {
            let (s, b) = call(&a, "POST", &cmds(""), body).await;
            assert_eq!(s, 400, "{body}");
            assert!(
                b["faultstring"]
                    .as_str()
                    .unwrap()
                    .starts_with("Invalid request body"),
                "{b}"
            );
        }
        let (s, b) = call(
            &a,
            "POST",
            &cmds(""),
            r#"{"name": "test.needs", "params": {"count": "x"}}"#,
        )
        .await;
        assert_eq!(s, 400);
        assert!(
            b["faultstring"]
                .as_str()
                .unwrap()
                .starts_with("Invalid command parameters: "),
            "{b}"
        );
        let (s, b) = call(
            &a,
            "POST",
            &cmds(""),
            r#"{"name": "clean.get_clean_steps", "params": {}}"#,
        )
        .await;
        assert_eq!(s, 400, "missing node/ports: {b}");
        // Not recorded.
        let (_, list) = call(&a, "GET", &cmds(""), "").await;
        assert_eq!(list["commands"], json!([]));
    }

    #[tokio::test]
    async fn busy_async_and_wait() {
        let release = Arc::new(tokio::sync::Notify::new());
        let a = agent(release.clone());
        let (s, b) = call(
            &a,
            "POST",
            &cmds("&wait=false"),
            r#"{"name": "test.block", "params": {}}"#,
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(b["command_status"], "RUNNING");
        assert_eq!(b["command_name"], "block");
        assert!(
            b.get("command_params").is_none(),
            "params are never serialised"
        );
        let id = b["id"].as_str().unwrap().to_string();

        // Every POST, sync ones included, is refused while it runs; GETs still work.
        let (s, busy) = call(
            &a,
            "POST",
            &cmds(""),
            r#"{"name": "standby.sync", "params": {}}"#,
        )
        .await;
        assert_eq!(s, 409);
        assert_eq!(
            busy["faultstring"],
            "Agent is busy: executing command block"
        );
        let (s, _) = call(&a, "GET", &cmds(""), "").await;
        assert_eq!(s, 200);

        let waiter = {
            let a = a.clone();
            let id = id.clone();
            tokio::spawn(async move {
                call(
                    &a,
                    "GET",
                    &format!("/v1/commands/{id}?agent_token={TOKEN}&wait=TRUE"),
                    "",
                )
                .await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "wait=true blocks while running");
        release.notify_one();
        let (s, done) = waiter.await.unwrap();
        assert_eq!(s, 200);
        assert_eq!(done["command_status"], "SUCCEEDED");
        assert_eq!(done["command_result"], json!({"result": "block: released"}));

        // Not busy any more; results stay in order.
        let (s, sync) = call(
            &a,
            "POST",
            &cmds("&wait=true"),
            r#"{"name": "standby.sync", "params": {}}"#,
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(sync["command_status"], "SUCCEEDED");
        let (_, list) = call(&a, "GET", &cmds(""), "").await;
        let names: Vec<_> = list["commands"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["command_name"].clone())
            .collect();
        assert_eq!(names, [json!("block"), json!("sync")]);
    }

    #[tokio::test]
    async fn sync_failure_is_a_recorded_200() {
        let a = agent(Default::default());
        let (s, b) = call(
            &a,
            "POST",
            &cmds(""),
            r#"{"name": "test.fails", "params": {}}"#,
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(b["command_status"], "FAILED");
        assert_eq!(b["command_result"], Value::Null);
        assert_eq!(
            b["command_error"],
            json!({"type": "CleaningError", "code": 500, "message": "Clean step failed", "details": "disk on fire"})
        );
    }

    #[tokio::test]
    async fn routing_like_werkzeug() {
        let a = agent(Default::default());
        let (s, b) = call(&a, "GET", "/", "").await;
        assert_eq!(s, 200);
        assert_eq!(b["name"], "OpenStack Ironic Python Agent API");
        assert_eq!(b["default_version"]["id"], "v1");
        let (s, b) = call(&a, "GET", "/v1/status", "").await;
        assert_eq!(s, 200);
        assert_eq!(b["version"], IPA_COMPATIBLE_VERSION);
        assert!(b["started_at"].as_f64().unwrap() > 0.0);
        let (s, b) = call(&a, "GET", "/v1/nothing", "").await;
        assert_eq!(s, 404);
        assert!(b["faultstring"].is_string());
        let (s, b) = call(&a, "DELETE", &cmds(""), "").await;
        assert_eq!(s, 405);
        assert!(b["faultstring"].is_string());
        let req = Request::builder()
            .uri(format!("/v1/commands?agent_token={TOKEN}"))
            .body(Body::empty())
            .unwrap();
        let resp = a.router().oneshot(req).await.unwrap();
        assert_eq!(resp.status().as_u16(), 308);
        assert_eq!(
            resp.headers()["location"],
            format!("/v1/commands/?agent_token={TOKEN}")
        );
        let (s, _) = call(
            &a,
            "GET",
            &format!("/v1/commands/unknown-id?agent_token={TOKEN}"),
            "",
        )
        .await;
        assert_eq!(s, 404);
    }

    #[tokio::test]
    async fn get_steps_through_the_real_extension() {
        let a = agent(Default::default());
        let body = std::str::from_utf8(include_bytes!(
            "../../../protocol/fixtures/get-clean-steps-request.json"
        ))
        .unwrap();
        let (s, b) = call(&a, "POST", &cmds("&wait=true"), body).await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["command_name"], "get_clean_steps");
        assert_eq!(b["command_status"], "SUCCEEDED");
        assert_eq!(
            b["command_result"]["hardware_manager_version"],
            json!({"generic_hardware_manager": "1.2"})
        );
        assert!(b["command_result"]["clean_steps"]["GenericHardwareManager"].is_array());
    }

    #[tokio::test]
    async fn version_mismatch_status() {
        let a = agent(Default::default());
        let mut body: Value = serde_json::from_slice(include_bytes!(
            "../../../protocol/fixtures/execute-clean-step-request.json"
        ))
        .unwrap();
        body["params"]["clean_version"] = json!({"generic_hardware_manager": "0.9"});
        let (s, b) = call(&a, "POST", &cmds("&wait=true"), &body.to_string()).await;
        assert_eq!(s, 200);
        assert_eq!(b["command_status"], "CLEAN_VERSION_MISMATCH");
        assert_eq!(b["command_error"]["type"], "VersionMismatch");
    }

    #[tokio::test]
    async fn hardware_info_lists_this_machine_without_its_disks() {
        let a = agent(Default::default());
        let (s, b) = call(
            &a,
            "POST",
            &cmds("&wait=true"),
            r#"{"name": "poll.get_hardware_info", "params": {}}"#,
        )
        .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["command_status"], "SUCCEEDED", "{b}");
        let inv = &b["command_result"];
        assert!(inv["cpu"]["count"].as_u64().unwrap() >= 1);
        assert!(inv["memory"]["total"].as_u64().unwrap() > 0);
        assert!(inv["boot"]["current_boot_mode"].is_string());
        // Not a ramdisk and nothing allowed: no disk of this machine may be listed.
        assert_eq!(inv["disks"], json!([]));
    }
}
