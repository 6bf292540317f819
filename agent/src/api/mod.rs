//! IPA's HTTP API (`/v1/commands/` and friends), byte-compatible with what the conductor
//! expects: routes, token check, `wait` semantics, status codes and `faultstring` bodies.

mod routes;
mod server;

pub use routes::{router, MAX_COMMAND_BODY};
pub use server::{bind, serve};
