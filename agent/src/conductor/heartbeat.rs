use std::sync::Arc;
use std::time::Duration;

use ironic_protocol::{ApiVersion, HeartbeatRequest, IPA_COMPATIBLE_VERSION};
use rand::Rng;
use tokio::sync::watch;
use tokio::time::Instant;

use super::IronicClient;
use crate::commands::Delivery;

/// Where each heartbeat reads the agent token: the agent's current one, since
/// `poll.set_node_info` can replace the token after start (a beat with the old one would be
/// rejected from then on).
pub type TokenSource = Arc<dyn Fn() -> Option<ironic_protocol::Secret> + Send + Sync>;

#[derive(Clone)]
pub struct HeartbeatSettings {
    pub node_uuid: String,
    /// Fixed for the agent's lifetime: Ironic rejects a changed callback URL.
    pub callback_url: String,
    pub token: TokenSource,
    /// PEM of the auto-TLS certificate, sent as `agent_verify_ca`.
    pub verify_ca: Option<String>,
    /// `heartbeat_timeout` from lookup, in seconds.
    pub heartbeat_timeout: f64,
}

impl std::fmt::Debug for HeartbeatSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeartbeatSettings")
            .field("node_uuid", &self.node_uuid)
            .field("callback_url", &self.callback_url)
            .field("token", &(self.token)())
            .field("verify_ca", &self.verify_ca.as_ref().map(|_| "PEM"))
            .field("heartbeat_timeout", &self.heartbeat_timeout)
            .finish()
    }
}

/// IPA's heartbeat loop: first beat at once, then every `heartbeat_timeout * U(0.3, 0.6)`
/// after success or `U(5, 10)` s after any failure. Besides, when an asynchronous command
/// finished and the conductor has not read its result, early beats as [`Delivery`] times
/// them (IPA sends one, at least 5 s after the previous beat).
pub struct Heartbeater {
    client: Arc<IronicClient>,
    settings: HeartbeatSettings,
    delivery: Arc<Delivery>,
}

impl Heartbeater {
    pub fn new(
        client: Arc<IronicClient>,
        settings: HeartbeatSettings,
        delivery: Arc<Delivery>,
    ) -> Self {
        Heartbeater {
            client,
            settings,
            delivery,
        }
    }

    /// Runs until `stop` becomes true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut next_due = Instant::now();
        let mut count: u64 = 0;
        loop {
            let early = self.delivery.early_beat_due();
            let due = early.map_or(next_due, |e| e.min(next_due));
            tokio::select! {
                _ = tokio::time::sleep_until(due) => {}
                _ = self.delivery.changed() => continue,
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        tracing::info!("heartbeats stopped");
                        return;
                    }
                    continue;
                }
            }
            let now = Instant::now();
            let early = self.delivery.early_beat_due().is_some_and(|e| e <= now);
            if now < next_due && !early {
                // The result was read meanwhile.
                continue;
            }
            if early {
                tracing::debug!("early heartbeat: the conductor has not read the last result");
            }
            // Before the request: Ironic may read the command list while it handles the beat.
            self.delivery.beat_sent(now);
            let ok = self.beat(count).await;
            count += 1;
            next_due = now + self.interval(ok, &mut rand::rng());
        }
    }

    fn interval(&self, ok: bool, rng: &mut impl Rng) -> Duration {
        if ok {
            Duration::from_secs_f64(self.settings.heartbeat_timeout * rng.random_range(0.3..=0.6))
        } else {
            Duration::from_secs_f64(5.0 * rng.random_range(1.0..=2.0))
        }
    }

    async fn beat(&self, count: u64) -> bool {
        let version = self.client.api_version().await;
        let request = build_request(&self.settings, version);
        match self
            .client
            .heartbeat(&self.settings.node_uuid, &request)
            .await
        {
            Ok(()) => {
                if count == 0 {
                    tracing::info!(node = %self.settings.node_uuid, %request, "first heartbeat accepted");
                } else {
                    tracing::debug!(node = %self.settings.node_uuid, "heartbeat accepted");
                }
                true
            }
            Err(e) => {
                let what = if e.status() == Some(409) {
                    "heartbeat conflict (node locked)"
                } else {
                    "heartbeat failed"
                };
                tracing::warn!(node = %self.settings.node_uuid, error = %e, "{what}");
                false
            }
        }
    }
}

/// The heartbeat body, with only the fields the negotiated version allows (a field sent too
/// early is a 400).
fn build_request(s: &HeartbeatSettings, server: ApiVersion) -> HeartbeatRequest {
    let version = server.min(ApiVersion::HEARTBEAT_MAX);
    HeartbeatRequest {
        callback_url: s.callback_url.clone(),
        agent_token: (version >= ApiVersion::AGENT_TOKEN).then(|| (s.token)()),
        agent_version: (version >= ApiVersion::AGENT_VERSION)
            .then(|| IPA_COMPATIBLE_VERSION.to_string()),
        agent_verify_ca: if version >= ApiVersion::AGENT_VERIFY_CA {
            s.verify_ca.clone()
        } else {
            None
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> HeartbeatSettings {
        HeartbeatSettings {
            node_uuid: "n".into(),
            callback_url: "https://192.0.2.10:9999".into(),
            token: Arc::new(|| Some(ironic_protocol::Secret::new("t".repeat(43)))),
            verify_ca: Some("PEM".into()),
            heartbeat_timeout: 300.0,
        }
    }

    #[test]
    fn fields_follow_the_version() {
        let new =
            serde_json::to_value(build_request(&settings(), ApiVersion::new(1, 115))).unwrap();
        assert_eq!(new["agent_verify_ca"], "PEM");
        assert_eq!(new["agent_version"], IPA_COMPATIBLE_VERSION);
        assert_eq!(new["agent_token"], json!("t".repeat(43)));

        let old = serde_json::to_value(build_request(&settings(), ApiVersion::FALLBACK)).unwrap();
        assert_eq!(old, json!({"callback_url": "https://192.0.2.10:9999"}));

        let mut none = settings();
        none.token = Arc::new(|| None);
        let v = serde_json::to_value(build_request(&none, ApiVersion::new(1, 62))).unwrap();
        assert_eq!(v["agent_token"], json!(null), "token key present with null");
        assert!(v.get("agent_verify_ca").is_none());
    }

    #[test]
    fn each_beat_sends_the_current_token() {
        let current = Arc::new(std::sync::Mutex::new("a".repeat(43)));
        let mut s = settings();
        let source = current.clone();
        s.token =
            Arc::new(move || Some(ironic_protocol::Secret::new(source.lock().unwrap().clone())));
        let v = ApiVersion::new(1, 115);
        assert_eq!(
            serde_json::to_value(build_request(&s, v)).unwrap()["agent_token"],
            json!("a".repeat(43))
        );
        *current.lock().unwrap() = "b".repeat(43);
        assert_eq!(
            serde_json::to_value(build_request(&s, v)).unwrap()["agent_token"],
            json!("b".repeat(43))
        );
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let token = "t".repeat(43);
        let request = build_request(&settings(), ApiVersion::new(1, 115));
        for text in [
            format!("{:?}", settings()),
            format!("{request:?}"),
            format!("{request}"),
        ] {
            assert!(!text.contains(&token), "{text}");
        }
        let reply: ironic_protocol::LookupConfig =
            serde_json::from_value(json!({"agent_token": token, "heartbeat_timeout": 300}))
                .unwrap();
        assert!(!format!("{reply:?}").contains(&token));
    }

    #[test]
    fn intervals_follow_ipa() {
        let client = Arc::new(
            IronicClient::new(
                &crate::config::Config::from_args(["x", "--cmdline-file", "/dev/null"])
                    .unwrap()
                    .options,
            )
            .unwrap(),
        );
        let hb = Heartbeater::new(client, settings(), Arc::new(Delivery::default()));
        let mut rng = rand::rng();
        for _ in 0..200 {
            let ok = hb.interval(true, &mut rng).as_secs_f64();
            assert!((90.0..=180.0).contains(&ok), "{ok}");
            let err = hb.interval(false, &mut rng).as_secs_f64();
            assert!((5.0..=10.0).contains(&err), "{err}");
        }
    }
}
