//! IPA's HTTP API (`/v1/commands/` and friends), byte-compatible with what the conductor
//! expects: routes, token check, `wait` semantics, status codes and `faultstring` bodies.

mod connections;
mod routes;
mod server;

pub use connections::{ConnectionHandle, Limits};
pub use routes::{router, MAX_COMMAND_BODY};
pub use server::{bind, serve};
