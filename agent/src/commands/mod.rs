//! IPA's command model: extensions (`standby`, `clean`, ...) offer commands; each call is
//! recorded in an ordered history the conductor polls; one asynchronous command runs at a time.

mod definition;
mod delivery;
mod execute;
mod history;
mod progress;

pub use definition::{CommandDef, CommandValue, Mode, NoParams, Params};
pub use delivery::Delivery;
pub use execute::{ApiError, Executor};
pub use history::{CommandHistory, CommandRecord};
