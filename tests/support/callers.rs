//! Callers: users in organisations holding session cookies, and their quiet sessions.

use super::*;

/// A caller: a user in an organisation, holding a valid session cookie.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user id.
    pub user_id: String,
    /// The organisation id.
    pub org_id: String,
    /// The cookie value.
    pub token: String,
}

/// Issues a session cookie for `user_id` in `org_id`, valid for `ttl_secs` (negative: expired).
pub async fn issue_token(user_id: &str, org_id: &str, ttl_secs: i64) -> String {
    let config = config();
    let store = AuthSessionStore::new(dynamodb().await, config.tables.auth_sessions);
    let token = new_token();
    let record = AuthRecord {
        user_id: user_id.into(),
        org_id: org_id.into(),
        expires_at_secs: Timestamp::now().epoch_secs() + ttl_secs,
    };
    store.put(&token_hash(&token), &record).await.expect("store the auth session");
    token
}

/// A new user in a new organisation with a cookie valid for an hour.
pub async fn new_caller() -> Caller {
    let (user_id, org_id) = (unique("user"), unique("org"));
    caller_in(&user_id, &org_id).await
}

/// A caller for the given user and organisation with a cookie valid for an hour.
pub async fn caller_in(user_id: &str, org_id: &str) -> Caller {
    let token = issue_token(user_id, org_id, 3600).await;
    Caller { user_id: user_id.into(), org_id: org_id.into(), token }
}

/// The caller's scope as the handlers get it: through authentication of their cookie
/// (only auth can make a `UserScope`). Warms the auth cache where there is one.
pub async fn scope_of(app: &App, caller: &Caller) -> knoq_shared::domain::UserScope {
    let request = post("/", caller.with_origin(&app.config.allowed_origin), "");
    app.auth.authenticate(&request).await.expect("a fresh cookie authenticates")
}

/// A session of `caller` (opening message `text`) whose run has no execution behind it:
/// it holds the session as a live run would, but nothing other than the test writes to it,
/// so faults planted on it meet the test's requests only. Its id.
pub async fn quiet_session(app: &App, caller: &Caller, text: &str) -> String {
    use knoq_shared::domain::{MessageText, RunId, SessionId};
    let scope = scope_of(app, caller).await;
    let id = SessionId::new();
    let text = MessageText::parse(text.into()).expect("a valid text");
    let timeout = knoq_shared::workflow::TURN_TIMEOUT;
    app.sessions
        .create(&scope, &id, &text, &RunId::new(), timeout, Timestamp::now())
        .await
        .expect("create a session");
    id.as_string()
}

/// A cookie from the operator command (`knoq-admin issue-token`), as `make token` prints it.
pub fn operator_token(user_id: &str, org_id: &str) -> String {
    let bin = std::env::var("KNOQ_ADMIN_BIN").expect("KNOQ_ADMIN_BIN: run through `make test`");
    let output = Command::new(bin)
        .args(["issue-token", "--user", user_id, "--org", org_id])
        .output()
        .expect("run knoq-admin");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout:?}");
    stdout.trim().to_string()
}
