//! Push notifications (PROTOCOL.md section 8). Not configured in this
//! build yet: the runtime holds no `PushService` and every `/push` route
//! answers 503 `push_disabled`.

use std::sync::Arc;

use crate::session::SessionHandle;

/// Sends Expo pushes when a session waits for its user or crashes.
pub struct PushService {}

impl PushService {
    /// An `extension_ui_request` went unanswered for the grace period.
    pub fn awaiting_input(
        &self,
        _session: &Arc<SessionHandle>,
        _request_id: &str,
        _method: &str,
        _record: &str,
    ) {
    }

    /// A session crashed.
    pub fn crashed(
        &self,
        _session: &Arc<SessionHandle>,
        _code: Option<i32>,
        _signal: Option<&str>,
        _adapter: Option<&str>,
    ) {
    }
}
