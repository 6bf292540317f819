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
use crate::commands::{ApiError, Executor};

type Params = Query<HashMap<String, String>>;

/// What every handler reaches: the agent's state and the commands it runs.
#[derive(Clone)]
struct ApiState {
    agent: Arc<Agent>,
    executor: Arc<Executor>,
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
pub fn router(agent: Arc<Agent>, executor: Arc<Executor>) -> Router {
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
        .with_state(ApiState { agent, executor })
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
    State(api): State<ApiState>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    check_token(&api.agent, &params)?;
    Ok(Json(json!({"commands": api.agent.history().snapshot()})).into_response())
}

async fn get_command(
    State(api): State<ApiState>,
    Path(id): Path<String>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    check_token(&api.agent, &params)?;
    let record = api
        .agent
        .history()
        .get(&id)
        .ok_or_else(|| ApiError::NotFound(format!("Command with id {id} not found.")))?;
    if wants_wait(&params) {
        record.wait().await;
    }
    Ok(Json(record.snapshot()).into_response())
}

async fn run_command(
    State(api): State<ApiState>,
    Query(params): Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_token(&api.agent, &params)?;
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
    let record = api
        .executor
        .execute(&api.agent, name, cmd_params.clone())
        .await?;
    if wants_wait(&params) {
        record.wait().await;
    }
    Ok(Json(record.snapshot()).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::{CommandDef, CommandValue, Mode, NoParams, Params};
    use crate::lifecycle::Service;
    use axum::body::Body;
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
