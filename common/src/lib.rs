//! The small vocabulary that the service layer (server only) and the app (browser and
//! server) share beyond the wire types of `protocol`: the one error both doors return, and
//! who is asking. It sits below `app` and `nixdeck-core`, so neither takes these types from
//! the other.

mod error;
mod viewer;

pub use error::AppError;
pub use viewer::Viewer;
