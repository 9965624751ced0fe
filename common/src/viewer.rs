use protocol::api::Role;

/// The logged-in user of a request, put into the request extensions by the server's
/// session layer and read by the page shell (CSRF meta tag), by server functions and by
/// the REST handlers, which hand it to the service functions.
#[derive(Clone, Debug, PartialEq)]
pub struct Viewer {
    pub username: String,
    pub role: Role,
    pub csrf_token: String,
    /// The client's address, for the audit log.
    pub ip: Option<String>,
    /// The stored hash of the session's id (which session to re-authenticate).
    pub session_hash: String,
    /// Unix seconds of the login or the latest re-authentication (0 for an API token).
    pub authenticated_at: i64,
    /// The name of the personal API token the request came with (`Authorization: Bearer`);
    /// None for a browser session. Such a request has no CSRF token, no session and no
    /// re-authentication (`service::auth::require_login`), and its audit rows name the token.
    pub api_token: Option<String>,
}
