use std::time::{Duration, Instant};

use ironic_protocol::LookupResponse;
use rand::Rng;

use super::{ClientError, IronicClient};

/// IPA's lookup retry settings.
#[derive(Debug, Clone)]
pub struct LookupSettings {
    /// Give up after this long (`ipa-lookup-timeout`).
    pub timeout: Duration,
    /// First back-off unit (`ipa-lookup-interval`).
    pub interval: Duration,
}

/// Longest single wait between attempts.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Extra pauses after 409 (node locked while the conductor starts the operation).
const CONFLICT_PAUSES: [u64; 3] = [5, 10, 30];

#[derive(Debug, thiserror::Error)]
#[error("lookup did not succeed within {seconds} s (last error: {last})")]
pub struct LookupTimeout {
    pub seconds: u64,
    pub last: String,
}

/// Looks the node up by the MACs of our NICs until Ironic answers, with randomised
/// exponential back-off (so a rack that boots at once does not hammer the API in step) and
/// extra pauses on 409. Gives up after `settings.timeout`; IPA then exits and its service
/// manager restarts it, which the caller mirrors.
pub async fn lookup_node(
    client: &IronicClient,
    macs: &[String],
    node_uuid: Option<&str>,
    settings: &LookupSettings,
) -> Result<LookupResponse, LookupTimeout> {
    let start = Instant::now();
    let mut attempt: u32 = 0;
    let mut conflicts = 0usize;
    loop {
        let last = match client.lookup(macs, node_uuid).await {
            Ok(reply) => {
                tracing::info!(
                    node = reply.node.uuid().unwrap_or_default(),
                    attempts = attempt + 1,
                    elapsed_ms = start.elapsed().as_millis() as u64,
                    "lookup succeeded"
                );
                return Ok(reply);
            }
            Err(e) => e,
        };
        let mut wait = backoff(settings.interval, attempt, &mut rand::rng());
        match &last {
            ClientError::Status { status: 409, .. } => {
                let pause = CONFLICT_PAUSES[conflicts.min(CONFLICT_PAUSES.len() - 1)];
                conflicts += 1;
                wait += Duration::from_secs(pause);
                tracing::info!(pause_s = pause, "node is locked (409), pausing lookup");
            }
            ClientError::Status { status: 404, .. } => {
                tracing::info!(macs = %macs.join(","), "no node in a waiting state matches our MACs yet (404)")
            }
            e => tracing::warn!(error = %e, "lookup failed"),
        }
        attempt = attempt.saturating_add(1);
        if start.elapsed() + wait > settings.timeout {
            return Err(LookupTimeout {
                seconds: settings.timeout.as_secs(),
                last: last.to_string(),
            });
        }
        tokio::time::sleep(wait).await;
    }
}

/// `U(0, min(60 s, interval * 2^attempt))`: full-jitter exponential back-off, as tenacity's
/// `wait_random_exponential` that IPA uses.
fn backoff(interval: Duration, attempt: u32, rng: &mut impl Rng) -> Duration {
    let cap = interval
        .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
        .min(MAX_WAIT);
    cap.mul_f64(rng.random_range(0.0..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let i = Duration::from_secs(1);
        for attempt in 0..40 {
            let cap = Duration::from_secs(1u64 << attempt.min(6)).min(MAX_WAIT);
            for _ in 0..50 {
                let w = backoff(i, attempt, &mut rng);
                assert!(w <= cap, "attempt {attempt}: {w:?} > {cap:?}");
            }
        }
        // Jitter: not every wait is the cap.
        let waits: Vec<_> = (0..20).map(|_| backoff(i, 5, &mut rng)).collect();
        assert!(waits.iter().any(|w| *w < Duration::from_secs(30)));
    }
}
