//! The API's open connections: how many there may be, which one to drop when that many are
//! open, and when an idle one is closed.
//!
//! # Hazards
//! Anyone on the provisioning network can connect; only the conductor has the token. Each
//! connection costs a file descriptor and buffers, and the agent needs its descriptors for
//! heartbeats, image downloads, disks and external managers: ~1000 idle sockets under the
//! default `RLIMIT_NOFILE` would make those fail with EMFILE mid-deploy. Refusing
//! connections at a cap would lock the conductor out instead. So the number is capped and,
//! at the cap, a newcomer takes the place of the connection that matters least:
//!
//! 1. an idle connection that has never shown the token, the one idle longest first (the
//!    newest connections are spared longest, and a new conductor connection sends its
//!    request at once);
//! 2. then such a connection with a request in progress (only unauthenticated routes, which
//!    answer at once);
//! 3. then an idle authenticated one, oldest first (the conductor's requests library opens
//!    a new connection, and retries a request whose connection was closed under it);
//! 4. never an authenticated connection in the middle of a request (a `wait=true` poll).
//!    When every connection is one of those (token holders polling hard), the one whose
//!    request started last (most likely a quick poll) is asked to close after its response
//!    (HTTP/1.1 `Connection: close`), and the newcomer waits for its slot, for at most
//!    [`ROTATE_WAIT`]; meanwhile nothing else is accepted, so later connections wait in the
//!    kernel's listen queue, in order, costing the agent no descriptor. Refusing instead
//!    would lock the conductor out whenever its polls alone fill the table.
//!
//! Token holders beyond the cap (more kept-alive connections than `max_connections`, all
//! polling) shed one another, and a new connection of the conductor is shed like any newcomer
//! that has not shown the token yet: the cap assumes the token's only holder is the
//! conductor, which needs a handful of connections. Junk without the token never sheds a
//! connection of the conductor while it has its own to give.
//!
//! A connection is authenticated for good once one of its requests carried the token (see
//! `routes::require_token`). An unauthenticated connection is closed after a short idle time
//! (it never got a request through, or its last one ended), an authenticated one after a
//! keep-alive idle time long enough for the conductor's polls.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Bounds on the API's connections. [`Limits::default`] is what the agent serves with, but
/// for `max_connections` (an option, `api_max_connections`).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections open at once, TLS handshakes included.
    pub max_connections: usize,
    /// A TLS handshake must be done in this time.
    pub tls_handshake: Duration,
    /// A connection that has not shown the token is closed when it has had no request in
    /// progress for this long: from its accept, or since its last request ended. This is
    /// also how long the HTTP version sniffing and the first request's head may take.
    pub unauthenticated_idle: Duration,
    /// An authenticated connection with no request in progress for this long is closed.
    pub idle: Duration,
    /// Requests in progress at once on one HTTP/2 connection.
    pub h2_max_concurrent_streams: u32,
}

impl Limits {
    /// The default cap. The conductor needs a handful of connections (one requests session
    /// per conductor, at most 10 pooled connections to a host); 64 leaves room for a monitor
    /// and for a takeover by another conductor, and keeps the API's share of the descriptors
    /// and of the buffers (at most ~1 MiB per HTTP/2 connection, see `server`) small.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            tls_handshake: Duration::from_secs(10),
            unauthenticated_idle: Duration::from_secs(10),
            // Ironic polls a running command every few seconds and heartbeats come every
            // 100-180 s (0.3-0.6 x heartbeat_timeout); between heartbeats a closed connection
            // costs the conductor one reconnect, and Ironic's agent client retries a request
            // that hit a connection closed under it (`[agent] max_command_attempts`).
            idle: Duration::from_secs(120),
            h2_max_concurrent_streams: 8,
        }
    }
}

/// Every open connection, and the permits that cap their number.
pub(super) struct Table {
    connections: Mutex<HashMap<u64, Arc<Connection>>>,
    permits: Arc<Semaphore>,
    next_id: AtomicU64,
    epoch: Instant,
    shed_count: AtomicU64,
    refused_count: AtomicU64,
    /// `now()` of the last shed/refused log line (0: none yet).
    last_log: AtomicU64,
}

/// How long admission waits for a shed connection to let go of its permit; dropping a
/// connection's future is immediate, so this only guards against a wedged task.
const SHED_WAIT: Duration = Duration::from_secs(1);

/// How long a newcomer waits for room (see the module documentation) before it is refused.
const ROTATE_WAIT: Duration = Duration::from_secs(10);

/// How often a waiting newcomer looks for room again.
const ADMIT_POLL: Duration = Duration::from_millis(20);

/// Connections without the token one address may hold (see [`Table::over_peer_limit`]).
const PER_PEER_UNAUTHENTICATED: usize = 16;

/// Least time between two log lines about shed or refused connections.
const LOG_EVERY: Duration = Duration::from_secs(10);

impl Table {
    pub(super) fn new(max_connections: usize) -> Arc<Table> {
        Arc::new(Table {
            connections: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(max_connections.max(1))),
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
            shed_count: AtomicU64::new(0),
            refused_count: AtomicU64::new(0),
            last_log: AtomicU64::new(0),
        })
    }

    /// Number of open connections.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Connection>>> {
        // The map is consistent at every point a holder could panic.
        self.connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes room for a newly accepted connection, shedding another one at the cap (see the
    /// module documentation). `None` means the newcomer must be refused.
    pub(super) async fn admit(self: &Arc<Self>, peer: SocketAddr) -> Option<Admitted> {
        if self.over_peer_limit(peer) {
            self.note_refused(
                peer,
                "the address holds too many connections without the token",
            );
            return None;
        }
        let deadline = Instant::now() + ROTATE_WAIT;
        let mut said = false;
        loop {
            if let Ok(p) = self.permits.clone().try_acquire_owned() {
                return self.admit_with(peer, p);
            }
            let choice = {
                let connections = self.lock();
                let candidates = || connections.values().map(|c| c.candidate());
                let get = |id: u64| connections.get(&id).cloned();
                if let Some(v) = choose_victim(candidates()).and_then(get) {
                    Some((v, false))
                } else if candidates().any(|c| c.retiring) {
                    // One is finishing its request to make room: wait for it.
                    None
                } else {
                    choose_retiree(candidates())
                        .and_then(get)
                        .map(|r| (r, true))
                }
            };
            match choice {
                Some((retiree, true)) => {
                    if !said {
                        tracing::info!(
                            peer = %retiree.peer,
                            "connection limit reached, every connection busy with an \
                             authenticated request: closing one after its response for a new one"
                        );
                        said = true;
                    }
                    retiree.retire.store(true, Ordering::Relaxed);
                }
                Some((victim, _)) => {
                    self.note_shed(&victim);
                    victim.shed();
                    if let Ok(Ok(p)) =
                        tokio::time::timeout(SHED_WAIT, self.permits.clone().acquire_owned()).await
                    {
                        return self.admit_with(peer, p);
                    }
                }
                None => {}
            }
            if Instant::now() >= deadline {
                self.note_refused(peer, "no connection made room in time");
                return None;
            }
            // A slot frees, or look again soon: a grace period ends, a request ends.
            if let Ok(Ok(p)) =
                tokio::time::timeout(ADMIT_POLL, self.permits.clone().acquire_owned()).await
            {
                return self.admit_with(peer, p);
            }
        }
    }

    /// Whether `peer`'s address already holds [`PER_PEER_UNAUTHENTICATED`] connections that
    /// never showed the token while none of its connections has: one machine flooding the
    /// API is refused at once (an accept and a close) instead of churning the table, and
    /// cannot take every slot. An address with an authenticated connection open (the
    /// conductor) is never limited.
    fn over_peer_limit(&self, peer: SocketAddr) -> bool {
        let connections = self.lock();
        let mut unauthenticated = 0;
        for c in connections.values().filter(|c| c.peer.ip() == peer.ip()) {
            if c.authenticated.load(Ordering::Relaxed) {
                return false;
            }
            unauthenticated += 1;
        }
        unauthenticated >= PER_PEER_UNAUTHENTICATED
    }

    /// Logs a shed connection, at most one line per [`LOG_EVERY`] (a flood sheds thousands
    /// a second, and a line each would cost more than the shedding).
    fn note_shed(&self, victim: &Connection) {
        let n = self.shed_count.fetch_add(1, Ordering::Relaxed) + 1;
        if self.log_due() {
            tracing::info!(
                peer = %victim.peer,
                authenticated = victim.authenticated.load(Ordering::Relaxed),
                shed_so_far = n,
                refused_so_far = self.refused_count.load(Ordering::Relaxed),
                "connection limit reached: dropping connections for new ones"
            );
        }
    }

    fn note_refused(&self, peer: SocketAddr, why: &'static str) {
        let n = self.refused_count.fetch_add(1, Ordering::Relaxed) + 1;
        if self.log_due() {
            tracing::warn!(
                %peer, why, refused_so_far = n, shed_so_far = self.shed_count.load(Ordering::Relaxed),
                "refusing new connections"
            );
        }
    }

    fn log_due(&self) -> bool {
        let now = self.now();
        let last = self.last_log.load(Ordering::Relaxed);
        (last == 0 || now.saturating_sub(last) >= LOG_EVERY.as_millis() as u64)
            && self
                .last_log
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    fn admit_with(
        self: &Arc<Self>,
        peer: SocketAddr,
        permit: OwnedSemaphorePermit,
    ) -> Option<Admitted> {
        let conn = Arc::new(Connection {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            peer,
            table_epoch: self.epoch,
            authenticated: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            last_active: AtomicU64::new(self.now()),
            shed: AtomicBool::new(false),
            retire: AtomicBool::new(false),
            close: Notify::new(),
        });
        self.lock().insert(conn.id, conn.clone());
        Some(Admitted {
            conn: ConnectionHandle(conn),
            table: self.clone(),
            _permit: permit,
        })
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// What the shedding policy knows about a connection.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    id: u64,
    authenticated: bool,
    busy: bool,
    /// Milliseconds since the table's epoch.
    last_active: u64,
    shed: bool,
    retiring: bool,
}

/// The connection to drop for a newcomer, by the order in the module documentation.
fn choose_victim(candidates: impl Iterator<Item = Candidate>) -> Option<u64> {
    candidates
        // An authenticated request in progress is the conductor waiting on the agent.
        .filter(|c| !c.shed && !c.retiring)
        .filter(|c| !(c.authenticated && c.busy))
        .min_by_key(|c| (c.authenticated, c.busy, c.last_active, c.id))
        .map(|c| c.id)
}

/// When there is no victim: the busy authenticated connection to close after its response,
/// the one whose request started last.
fn choose_retiree(candidates: impl Iterator<Item = Candidate>) -> Option<u64> {
    candidates
        .filter(|c| c.authenticated && c.busy && !c.shed && !c.retiring)
        .max_by_key(|c| (c.last_active, c.id))
        .map(|c| c.id)
}

/// One open connection's state, shared by its task, its requests and the table.
pub(super) struct Connection {
    id: u64,
    peer: SocketAddr,
    table_epoch: Instant,
    authenticated: AtomicBool,
    in_flight: AtomicUsize,
    /// Milliseconds since the table's epoch: the accept, or the last request's start or end.
    last_active: AtomicU64,
    shed: AtomicBool,
    /// Close after the response in progress (see [`choose_retiree`]).
    retire: AtomicBool,
    close: Notify,
}

impl Connection {
    fn now(&self) -> u64 {
        self.table_epoch.elapsed().as_millis() as u64
    }

    fn candidate(&self) -> Candidate {
        Candidate {
            id: self.id,
            authenticated: self.authenticated.load(Ordering::Relaxed),
            busy: self.in_flight.load(Ordering::Relaxed) > 0,
            last_active: self.last_active.load(Ordering::Relaxed),
            shed: self.shed.load(Ordering::Relaxed),
            retiring: self.retire.load(Ordering::Relaxed),
        }
    }

    fn shed(&self) {
        self.shed.store(true, Ordering::Relaxed);
        // Stores a wake-up if the task is not waiting right now.
        self.close.notify_one();
    }

    fn touch(&self) {
        self.last_active.store(self.now(), Ordering::Relaxed);
    }
}

/// A connection, as its requests see it (in their extensions).
#[derive(Clone)]
pub struct ConnectionHandle(Arc<Connection>);

impl ConnectionHandle {
    /// The connection has shown the token: it is the conductor's.
    pub fn mark_authenticated(&self) {
        self.0.authenticated.store(true, Ordering::Relaxed);
    }

    /// Whether the response being made must close the connection (`Connection: close`).
    pub(super) fn retiring(&self) -> bool {
        self.0.retire.load(Ordering::Relaxed)
    }

    /// Counts a request as in progress until the guard is dropped (response ready, or the
    /// request abandoned).
    pub(super) fn request_started(&self) -> RequestGuard {
        self.0.in_flight.fetch_add(1, Ordering::Relaxed);
        self.0.touch();
        RequestGuard(self.0.clone())
    }

    /// Resolves when the connection must be closed: shed for a newcomer, or idle past its
    /// limit. Returns why, for the log.
    pub(super) async fn closed(&self, limits: &Limits) -> &'static str {
        let conn = &self.0;
        loop {
            let limit = if conn.authenticated.load(Ordering::Relaxed) {
                limits.idle
            } else {
                limits.unauthenticated_idle
            };
            let last = conn.last_active.load(Ordering::Relaxed);
            let deadline = conn.table_epoch + Duration::from_millis(last) + limit;
            let busy = conn.in_flight.load(Ordering::Relaxed) > 0;
            if !busy && Instant::now() >= deadline {
                return "idle";
            }
            // Busy (a `wait=true` poll): look again one limit later; the request's end
            // touches the connection, so the idle time counts from then.
            let wake = if busy {
                Instant::now() + limit
            } else {
                deadline
            };
            tokio::select! {
                _ = conn.close.notified() => return "shed for a new connection",
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }
}

/// Ends a request's count on drop.
pub(super) struct RequestGuard(Arc<Connection>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's place in the table: removed, and its permit released, on drop.
pub(super) struct Admitted {
    conn: ConnectionHandle,
    table: Arc<Table>,
    // Released after `drop` has removed the entry, so the next admission never picks a
    // connection that is already gone.
    _permit: OwnedSemaphorePermit,
}

impl Admitted {
    pub(super) fn handle(&self) -> &ConnectionHandle {
        &self.conn
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.table.lock().remove(&self.conn.0.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: u64, authenticated: bool, busy: bool, last_active: u64) -> Candidate {
        Candidate {
            id,
            authenticated,
            busy,
            last_active,
            shed: false,
            retiring: false,
        }
    }

    #[test]
    fn with_every_connection_busy_and_authenticated_the_latest_request_retires() {
        let all = [
            c(1, true, true, 5),
            c(2, true, true, 9),
            c(3, true, true, 7),
        ];
        assert_eq!(choose_victim(all.into_iter()), None);
        assert_eq!(choose_retiree(all.into_iter()), Some(2));
        let mut retiring = all;
        retiring[1].retiring = true;
        assert_eq!(
            choose_retiree(retiring.into_iter()),
            Some(3),
            "one at a time each"
        );
        // Idle or unauthenticated connections are victims, not retirees.
        assert_eq!(
            choose_retiree([c(1, true, false, 5), c(2, false, true, 9)].into_iter()),
            None
        );
    }

    #[test]
    fn sheds_the_oldest_idle_unauthenticated_first() {
        let all = [
            c(1, true, false, 0),
            c(2, false, true, 1),
            c(3, false, false, 9),
            c(4, false, false, 5),
            c(5, true, true, 2),
        ];
        assert_eq!(choose_victim(all.into_iter()), Some(4));
    }

    #[test]
    fn then_busy_unauthenticated_then_idle_authenticated_never_busy_authenticated() {
        let busy_unauth = [
            c(1, true, false, 0),
            c(2, false, true, 7),
            c(5, true, true, 0),
        ];
        assert_eq!(choose_victim(busy_unauth.into_iter()), Some(2));
        let only_auth = [
            c(1, true, false, 8),
            c(3, true, false, 3),
            c(5, true, true, 0),
        ];
        assert_eq!(choose_victim(only_auth.into_iter()), Some(3));
        let all_busy = [c(1, true, true, 0), c(2, true, true, 1)];
        assert_eq!(choose_victim(all_busy.into_iter()), None);
    }

    #[test]
    fn a_connection_already_shed_is_not_picked_again() {
        let mut first = c(1, false, false, 0);
        first.shed = true;
        assert_eq!(
            choose_victim([first, c(2, false, false, 4)].into_iter()),
            Some(2)
        );
    }

    fn peer() -> SocketAddr {
        "127.0.0.1:9".parse().unwrap()
    }

    #[tokio::test]
    async fn at_the_cap_the_unauthenticated_connection_goes_not_the_conductors() {
        let table = Table::new(2);
        let conductor = table.admit(peer()).await.unwrap();
        conductor.handle().mark_authenticated();
        let stranger = table.admit(peer()).await.unwrap();
        let stranger_handle = stranger.handle().clone();
        let limits = Limits::default();
        let closed = tokio::spawn(async move {
            let why = stranger_handle.closed(&limits).await;
            drop(stranger);
            why
        });
        let newcomer = table.admit(peer()).await.expect("room made");
        assert_eq!(closed.await.unwrap(), "shed for a new connection");
        assert_eq!(table.len(), 2);
        drop((conductor, newcomer));
        assert_eq!(table.len(), 0);
    }

    /// Every slot an authenticated request in progress: the newcomer is not refused at once
    /// (that locked the conductor out when token holders' polls filled the table) but waits;
    /// the connection whose request started last is told to close after its response, and
    /// the newcomer gets its slot when it does.
    #[tokio::test(start_paused = true)]
    async fn when_every_connection_is_an_authenticated_request_the_newcomer_waits_for_one() {
        let table = Table::new(2);
        let first = table.admit(peer()).await.unwrap();
        first.handle().mark_authenticated();
        let _long = first.handle().request_started();
        tokio::time::sleep(Duration::from_millis(10)).await;
        let second = table.admit(peer()).await.unwrap();
        second.handle().mark_authenticated();
        let quick = second.handle().request_started();
        let t = table.clone();
        let newcomer = tokio::spawn(async move { t.admit(peer()).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!newcomer.is_finished(), "waits instead of being refused");
        assert!(
            second.handle().retiring(),
            "the latest request's connection retires"
        );
        assert!(!first.handle().retiring());
        // Its response goes out with `Connection: close`, and the connection ends.
        drop(quick);
        drop(second);
        assert!(
            newcomer.await.unwrap().is_some(),
            "the newcomer took the slot"
        );
    }

    /// One address without the token gets at most PER_PEER_UNAUTHENTICATED slots, even
    /// below the cap; another address is not affected, nor is an address whose connection
    /// showed the token (the conductor's).
    #[tokio::test]
    async fn one_address_without_the_token_holds_a_bounded_share() {
        let table = Table::new(64);
        let junk: SocketAddr = "10.0.0.9:4000".parse().unwrap();
        let mut held = Vec::new();
        for _ in 0..PER_PEER_UNAUTHENTICATED {
            held.push(table.admit(junk).await.expect("below its share"));
        }
        assert!(table.admit(junk).await.is_none(), "over its share: refused");
        let other: SocketAddr = "10.0.0.10:4000".parse().unwrap();
        assert!(
            table.admit(other).await.is_some(),
            "another address is served"
        );
        held[0].handle().mark_authenticated();
        assert!(
            table.admit(junk).await.is_some(),
            "an address with an authenticated connection is not limited"
        );
    }

    /// ... but not for ever: with no connection closing, it is refused after ROTATE_WAIT.
    #[tokio::test(start_paused = true)]
    async fn refused_when_no_authenticated_request_ends_in_time() {
        let table = Table::new(1);
        let conductor = table.admit(peer()).await.unwrap();
        conductor.handle().mark_authenticated();
        let _request = conductor.handle().request_started();
        let started = Instant::now();
        assert!(table.admit(peer()).await.is_none());
        assert_eq!(started.elapsed(), ROTATE_WAIT);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_limits_depend_on_authentication_and_requests_in_progress() {
        let limits = Limits {
            unauthenticated_idle: Duration::from_secs(10),
            idle: Duration::from_secs(100),
            ..Limits::default()
        };
        let table = Table::new(4);
        let stranger = table.admit(peer()).await.unwrap();
        let started = Instant::now();
        assert_eq!(stranger.handle().closed(&limits).await, "idle");
        assert_eq!(started.elapsed().as_secs(), 10);

        let conductor = table.admit(peer()).await.unwrap();
        conductor.handle().mark_authenticated();
        let request = conductor.handle().request_started();
        let started = Instant::now();
        let handle = conductor.handle().clone();
        let limits2 = limits.clone();
        let closing = tokio::spawn(async move { handle.closed(&limits2).await });
        // A request in progress (a `wait=true` poll) keeps it open however long it takes.
        tokio::time::sleep(Duration::from_secs(1000)).await;
        assert!(!closing.is_finished());
        drop(request);
        assert_eq!(closing.await.unwrap(), "idle");
        let elapsed = started.elapsed().as_secs();
        assert!((1100..=1200).contains(&elapsed), "{elapsed}");
    }
}
